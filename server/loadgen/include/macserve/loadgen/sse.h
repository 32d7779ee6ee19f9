// Server-sent events: the byte stream of an SSE response cut into events. Bytes may arrive split
// anywhere (inside a line, inside "\r\n"); each complete event's `data` field (its data: lines
// joined by "\n") is handed to the callback. Comments (":" lines) and other fields are skipped.
#pragma once

#include <functional>
#include <string>
#include <string_view>

namespace macserve::loadgen {

class SseParser {
 public:
  using OnEvent = std::function<void(std::string_view data)>;
  explicit SseParser(OnEvent on_event) : on_event_(std::move(on_event)) {}

  void feed(std::string_view bytes);
  // End of stream: an event not closed by a blank line is dispatched (servers that omit the last
  // blank line before closing still deliver it).
  void finish();

 private:
  void on_line(std::string_view line);

  OnEvent on_event_;
  std::string line_;  // the current incomplete line
  std::string data_;  // data of the current event
  bool has_data_ = false;
  bool last_was_cr_ = false;
};

}  // namespace macserve::loadgen
