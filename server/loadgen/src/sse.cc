#include "macserve/loadgen/sse.h"

namespace macserve::loadgen {

void SseParser::feed(std::string_view bytes) {
  for (char c : bytes) {
    if (c == '\n') {
      if (!last_was_cr_) on_line(line_);  // "\r\n": the line ended at '\r'
      line_.clear();
      last_was_cr_ = false;
    } else if (c == '\r') {
      on_line(line_);
      line_.clear();
      last_was_cr_ = true;
    } else {
      line_.push_back(c);
      last_was_cr_ = false;
    }
  }
}

void SseParser::finish() {
  if (!line_.empty()) on_line(line_);
  line_.clear();
  if (has_data_) on_line("");
}

void SseParser::on_line(std::string_view line) {
  if (line.empty()) {  // end of event
    if (has_data_) on_event_(data_);
    data_.clear();
    has_data_ = false;
    return;
  }
  if (line.front() == ':') return;  // comment / keep-alive
  const auto colon = line.find(':');
  const std::string_view field = line.substr(0, colon);
  if (field != "data") return;
  std::string_view value =
      colon == std::string_view::npos ? std::string_view{} : line.substr(colon + 1);
  if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  if (has_data_) data_.push_back('\n');
  data_.append(value);
  has_data_ = true;
}

}  // namespace macserve::loadgen
