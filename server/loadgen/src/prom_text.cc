#include "macserve/loadgen/prom_text.h"

#include <charconv>
#include <cmath>
#include <cstdlib>

namespace macserve::loadgen {

std::map<std::string, double> parse_prometheus_text(std::string_view text) {
  std::map<std::string, double> out;
  std::size_t pos = 0;
  while (pos < text.size()) {
    auto end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || line.front() == '#') continue;
    std::size_t name_end = line.find_first_of("{ ");
    if (name_end == std::string_view::npos) continue;
    const std::string name(line.substr(0, name_end));
    std::size_t value_at = name_end;
    if (line[name_end] == '{') {
      // Label values may contain '}' inside quotes: skip quoted strings.
      bool quoted = false;
      std::size_t i = name_end + 1;
      for (; i < line.size(); ++i) {
        if (line[i] == '\\' && quoted)
          ++i;
        else if (line[i] == '"')
          quoted = !quoted;
        else if (line[i] == '}' && !quoted)
          break;
      }
      value_at = i + 1;
    }
    if (value_at >= line.size()) continue;
    std::string value(line.substr(value_at));
    const auto first = value.find_first_not_of(' ');
    if (first == std::string::npos) continue;
    value = value.substr(first, value.find(' ', first) - first);
    char* endp = nullptr;
    const double v = std::strtod(value.c_str(), &endp);
    if (endp == value.c_str() || !std::isfinite(v)) continue;
    out[name] += v;
  }
  return out;
}

nlohmann::ordered_json server_metrics_delta(const std::map<std::string, double>& before,
                                            const std::map<std::string, double>& after) {
  auto delta = [&](const std::string& name) {
    const auto a = after.find(name);
    const auto b = before.find(name);
    return (a == after.end() ? 0.0 : a->second) - (b == before.end() ? 0.0 : b->second);
  };
  auto ratio = [](double num, double den) {
    return den > 0 ? nlohmann::ordered_json(num / den) : nlohmann::ordered_json();
  };
  nlohmann::ordered_json j;
  const double gen = delta("macserve:generation_tokens_total");
  const double prompt = delta("macserve:prompt_tokens_total");
  const double pq = delta("macserve:prefix_cache_queries_total");
  const double ph = delta("macserve:prefix_cache_hits_total");
  const double heads = delta("macserve:mac_heads_total");
  const double hits = delta("macserve:mac_hits_total");
  const double read = delta("macserve:mac_kv_bytes_read_total");
  const double full = delta("macserve:mac_kv_bytes_full_equivalent_total");
  j["generation_tokens"] = gen;
  j["prompt_tokens"] = prompt;
  j["request_success"] = delta("macserve:request_success_total");
  j["preemptions"] = delta("macserve:num_preemptions_total");
  j["prefix_cache_queries"] = pq;
  j["prefix_cache_hits"] = ph;
  j["prefix_cache_hit_rate"] = ratio(ph, pq);
  j["mac_heads"] = heads;
  j["mac_hits"] = hits;
  j["mac_hit_rate"] = ratio(hits, heads);
  j["mac_kv_bytes_read"] = read;
  j["mac_kv_bytes_full_equivalent"] = full;
  j["mac_kv_read_fraction"] = ratio(read, full);
  j["engine_steps"] = delta("macserve:engine_steps_total");
  return j;
}

}  // namespace macserve::loadgen
