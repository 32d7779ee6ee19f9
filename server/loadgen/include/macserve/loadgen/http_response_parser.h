// Incremental HTTP/1.1 response parser: status line, headers, then the body by Content-Length,
// chunked transfer coding, or until the connection closes. Bytes may arrive split anywhere.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace macserve::loadgen {

class HttpResponseParser {
 public:
  using OnBody = std::function<void(std::string_view)>;
  explicit HttpResponseParser(OnBody on_body) : on_body_(std::move(on_body)) {}

  // Consumes bytes; returns false on a malformed response (error() says why).
  bool feed(std::string_view bytes);
  // The peer closed the connection: completes an until-close body.
  void on_eof();

  bool headers_done() const { return state_ != State::kHeaders; }
  bool done() const { return state_ == State::kDone; }
  int status() const { return status_; }
  bool keep_alive() const { return keep_alive_; }
  const std::string& error() const { return error_; }

 private:
  enum class State {
    kHeaders,
    kLength,
    kChunkSize,
    kChunkData,
    kChunkCrlf,
    kTrailer,
    kUntilClose,
    kDone,
    kError
  };
  bool parse_head(std::string_view head);
  bool fail(std::string why);

  OnBody on_body_;
  State state_ = State::kHeaders;
  std::string buf_;  // header bytes, or the current chunk-size / trailer line
  int status_ = 0;
  bool keep_alive_ = true;
  uint64_t remaining_ = 0;
  std::string error_;
};

}  // namespace macserve::loadgen
