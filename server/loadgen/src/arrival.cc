#include "macserve/loadgen/arrival.h"

#include <cmath>
#include <random>
#include <sstream>

#include "macserve/core/error.h"
#include "macserve/loadgen/stats.h"

namespace macserve::loadgen {

std::vector<double> arrival_offsets(int64_t n, double request_rate, double burstiness,
                                    uint64_t seed) {
  if (!(request_rate > 0))
    throw_error(ErrorCode::kInvalidArgument, "--request-rate must be > 0 or inf, got {}",
                request_rate);
  if (!(burstiness > 0) || !std::isfinite(burstiness))
    throw_error(ErrorCode::kInvalidArgument, "--burstiness must be a positive number, got {}",
                burstiness);
  std::vector<double> out(static_cast<std::size_t>(std::max<int64_t>(n, 0)), 0.0);
  if (std::isinf(request_rate)) return out;
  std::mt19937_64 rng(seed);
  // Gamma(shape k, scale theta) has mean k * theta: theta = 1 / (rate * k) gives mean 1 / rate.
  std::gamma_distribution<double> gap(burstiness, 1.0 / (request_rate * burstiness));
  double t = 0;
  for (double& x : out) {
    x = t;
    t += gap(rng);
  }
  return out;
}

std::vector<double> parse_rates(const std::string& csv) {
  std::vector<double> out;
  for (const std::string& s : split_csv(csv)) {
    if (s == "inf" || s == "Inf" || s == "INF") {
      out.push_back(kInfiniteRate);
      continue;
    }
    std::size_t used = 0;
    double v = 0;
    try {
      v = std::stod(s, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != s.size() || !(v > 0) || !std::isfinite(v))
      throw_error(ErrorCode::kInvalidArgument,
                  "--request-rate: '{}' is not a positive number or inf", s);
    out.push_back(v);
  }
  if (out.empty()) throw_error(ErrorCode::kInvalidArgument, "--request-rate: no rate given");
  return out;
}

std::vector<int64_t> parse_concurrencies(const std::string& csv) {
  std::vector<int64_t> out;
  for (const std::string& s : split_csv(csv)) {
    std::size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(s, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != s.size() || v < 1)
      throw_error(ErrorCode::kInvalidArgument, "--max-concurrency: '{}' is not a positive integer",
                  s);
    out.push_back(v);
  }
  if (out.empty()) out.push_back(0);
  return out;
}

}  // namespace macserve::loadgen
