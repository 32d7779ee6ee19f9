// One HTTP connection: reads requests, routes them, answers (plain or server-sent events), and
// owns the generation of the request in flight. Every handler runs on the connection's strand;
// engine outputs arrive through the ResponseStream listener, which posts to that strand.
#pragma once

#include <chrono>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <utility>  // before Asio: Boost 1.74 uses std::exchange without it
#include <vector>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "macserve/http/server.h"

namespace macserve::http {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, ServeState& state);
  ~Session();
  void start();
  // Closes the connection at the next opportunity (server stop).
  void close();

 private:
  struct Generation;
  struct Reply {
    Reply(int s, std::string b, std::string type = "application/json")
        : status(s), body(std::move(b)), content_type(std::move(type)) {}
    int status;
    std::string body;
    std::string content_type;
    std::vector<std::pair<std::string, std::string>> headers;
  };

  // Reading.
  void read_next();
  void read_request();
  void on_read(beast::error_code ec);
  void handle(const bhttp::request<bhttp::string_body>& req);

  // Routes.
  void route(const bhttp::request<bhttp::string_body>& req, const std::string& path);
  void health();
  void metrics();
  void start_generation(openai::Endpoint endpoint, const std::string& body);
  bool authorized(const bhttp::request<bhttp::string_body>& req) const;
  void cors_preflight(const bhttp::request<bhttp::string_body>& req);

  // Answers.
  void reply(Reply r);
  void reply_error(const openai::ApiError& e,
                   std::vector<std::pair<std::string, std::string>> headers = {});
  void add_common_headers(bhttp::fields& f) const;
  void after_response(int status, bool keep_alive);
  void log_access(int status) const;

  // Server-sent events.
  void start_events();
  void queue_event(const std::string& json);  // "data: <json>\n\n"
  void end_events();
  void write_pending();

  // Generation.
  void on_engine_output(uint64_t generation_id);
  void finish_generation();
  void abandon_generation();  // client gone: cancel everything, answer nothing
  void watch_disconnect();

  void shutdown_socket();

  beast::tcp_stream stream_;
  net::any_io_executor ex_;  // the socket's strand
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  ServeState& st_;
  std::string peer_;
  bool closed_ = false;

  // The request being answered.
  std::string method_, target_, request_id_, origin_;
  bool keep_alive_ = true;
  Clock::time_point started_;

  std::unique_ptr<Generation> gen_;
  uint64_t next_generation_id_ = 0;

  // Event stream state.
  struct EventWriter;
  std::unique_ptr<EventWriter> events_;
};

}  // namespace macserve::http
