// Prometheus text exposition, read back: every sample summed by metric name over its label sets
// (request_success_total{finished_reason=...} -> one number), so two scrapes give counter deltas.
#pragma once

#include <map>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace macserve::loadgen {

std::map<std::string, double> parse_prometheus_text(std::string_view text);

// The server-side view of a run from two scrapes of /metrics (macserve:* names): tokens,
// preemptions, prefix-cache and MAC-Attention hit rates, KV bytes read versus full attention.
// Rates are null when their denominator did not move.
nlohmann::ordered_json server_metrics_delta(const std::map<std::string, double>& before,
                                            const std::map<std::string, double>& after);

}  // namespace macserve::loadgen
