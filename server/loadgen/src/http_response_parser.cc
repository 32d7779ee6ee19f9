#include "macserve/loadgen/http_response_parser.h"

#include <algorithm>
#include <cctype>
#include <charconv>

namespace macserve::loadgen {
namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

constexpr std::size_t kMaxHead = std::size_t{64} * 1024;

}  // namespace

bool HttpResponseParser::fail(std::string why) {
  state_ = State::kError;
  error_ = std::move(why);
  return false;
}

bool HttpResponseParser::parse_head(std::string_view head) {
  const auto eol = head.find("\r\n");
  const std::string_view status_line = head.substr(0, eol);
  if (status_line.substr(0, 7) != "HTTP/1." || status_line.size() < 12)
    return fail("not an HTTP/1.x status line: " + std::string(status_line.substr(0, 64)));
  if (std::from_chars(status_line.data() + 9, status_line.data() + 12, status_).ec != std::errc())
    return fail("bad status code");
  keep_alive_ = status_line[7] == '1';  // HTTP/1.0 closes unless told otherwise
  bool chunked = false;
  bool has_length = false;
  std::size_t pos = eol == std::string_view::npos ? head.size() : eol + 2;
  while (pos < head.size()) {
    auto end = head.find("\r\n", pos);
    if (end == std::string_view::npos) end = head.size();
    const std::string_view line = head.substr(pos, end - pos);
    pos = end + 2;
    const auto colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    const std::string name = lower(trim(line.substr(0, colon)));
    const std::string value = lower(trim(line.substr(colon + 1)));
    if (name == "content-length") {
      if (std::from_chars(value.data(), value.data() + value.size(), remaining_).ec != std::errc())
        return fail("bad Content-Length");
      has_length = true;
    } else if (name == "transfer-encoding") {
      chunked = value.find("chunked") != std::string::npos;
    } else if (name == "connection") {
      if (value.find("close") != std::string::npos) keep_alive_ = false;
      if (value.find("keep-alive") != std::string::npos) keep_alive_ = true;
    }
  }
  if (status_ == 204 || status_ == 304)
    state_ = State::kDone;
  else if (chunked)
    state_ = State::kChunkSize;
  else if (has_length)
    state_ = remaining_ == 0 ? State::kDone : State::kLength;
  else {
    state_ = State::kUntilClose;
    keep_alive_ = false;
  }
  return true;
}

bool HttpResponseParser::feed(std::string_view in) {
  while (!in.empty()) {
    switch (state_) {
      case State::kHeaders: {
        const std::size_t old = buf_.size();
        buf_.append(in);
        const auto end = buf_.find("\r\n\r\n", old >= 3 ? old - 3 : 0);
        if (end == std::string::npos) {
          if (buf_.size() > kMaxHead) return fail("response headers too large");
          return true;
        }
        const std::size_t used = end + 4 - old;
        const std::string head = buf_.substr(0, end + 2);
        buf_.clear();
        in.remove_prefix(used);
        if (!parse_head(head)) return false;
        if (status_ >= 100 && status_ < 200) state_ = State::kHeaders;  // interim response
        break;
      }
      case State::kLength: {
        const auto n = static_cast<std::size_t>(std::min<uint64_t>(remaining_, in.size()));
        on_body_(in.substr(0, n));
        in.remove_prefix(n);
        remaining_ -= n;
        if (remaining_ == 0) state_ = State::kDone;
        break;
      }
      case State::kChunkSize:
      case State::kTrailer: {
        const auto nl = in.find('\n');
        buf_.append(in.substr(0, nl == std::string_view::npos ? in.size() : nl + 1));
        if (buf_.size() > 4096) return fail("chunk header line too long");
        if (nl == std::string_view::npos) return true;
        in.remove_prefix(nl + 1);
        const std::string_view line = trim(std::string_view(buf_).substr(0, buf_.size() - 1));
        if (state_ == State::kTrailer) {
          if (line.empty()) state_ = State::kDone;
        } else {
          const std::string_view hex = line.substr(0, line.find(';'));
          if (hex.empty() ||
              std::from_chars(hex.data(), hex.data() + hex.size(), remaining_, 16).ec !=
                  std::errc())
            return fail("bad chunk size line");
          state_ = remaining_ == 0 ? State::kTrailer : State::kChunkData;
        }
        buf_.clear();
        break;
      }
      case State::kChunkData: {
        const auto n = static_cast<std::size_t>(std::min<uint64_t>(remaining_, in.size()));
        on_body_(in.substr(0, n));
        in.remove_prefix(n);
        remaining_ -= n;
        if (remaining_ == 0) {
          state_ = State::kChunkCrlf;
          remaining_ = 2;
        }
        break;
      }
      case State::kChunkCrlf: {
        while (remaining_ > 0 && !in.empty()) {
          if (in.front() != '\r' && in.front() != '\n')
            return fail("missing CRLF after chunk data");
          const bool lf = in.front() == '\n';
          in.remove_prefix(1);
          --remaining_;
          if (lf) remaining_ = 0;
        }
        if (remaining_ == 0) state_ = State::kChunkSize;
        break;
      }
      case State::kUntilClose:
        on_body_(in);
        in = {};
        break;
      case State::kDone:
        return in.empty() ? true : fail("bytes after the end of the response");
      case State::kError:
        return false;
    }
  }
  return true;
}

void HttpResponseParser::on_eof() {
  if (state_ == State::kUntilClose) state_ = State::kDone;
}

}  // namespace macserve::loadgen
