// Request arrival times as `vllm bench serve` draws them: gaps from a gamma distribution with shape
// `burstiness` and mean 1/rate (burstiness 1 = Poisson; < 1 burstier, > 1 more regular); rate inf
// sends everything at time 0.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace macserve::loadgen {

inline constexpr double kInfiniteRate = std::numeric_limits<double>::infinity();

// Offsets in seconds from the benchmark start, non-decreasing, `n` of them; same seed, same times.
// Throws Error(kInvalidArgument) for rate <= 0 or burstiness <= 0.
std::vector<double> arrival_offsets(int64_t n, double request_rate, double burstiness,
                                    uint64_t seed);

// "inf" or a positive number; lists for sweeps ("1,2,4,inf").
std::vector<double> parse_rates(const std::string& csv);
std::vector<int64_t> parse_concurrencies(const std::string& csv);  // "" -> {0} (no limit)

}  // namespace macserve::loadgen
