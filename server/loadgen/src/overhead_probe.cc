#include "macserve/loadgen/overhead_probe.h"

#include <utility>  // before Asio (Boost 1.74 + g++ 12 in C++20)

#include <array>
#include <boost/asio.hpp>
#include <charconv>
#include <string>
#include <thread>

namespace macserve::loadgen {

namespace net = boost::asio;
using tcp = net::ip::tcp;

namespace {

std::string canned_response(int num_chunks) {
  std::string body;
  for (int i = 0; i < num_chunks; ++i)
    body +=
        R"(data: {"id":"probe","object":"text_completion","choices":[{"index":0,"text":" word","finish_reason":null}]})"
        "\n\n";
  body +=
      R"(data: {"id":"probe","object":"text_completion","choices":[{"index":0,"text":"","finish_reason":"length"}]})"
      "\n\n";
  body +=
      R"(data: {"id":"probe","object":"text_completion","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":)" +
      std::to_string(num_chunks) + R"(,"total_tokens":)" + std::to_string(num_chunks + 1) +
      "}}\n\n";
  body += "data: [DONE]\n\n";
  char hex[16];
  auto [end, ec] = std::to_chars(hex, hex + sizeof(hex), body.size(), 16);
  return "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: "
         "chunked\r\n\r\n" +
         std::string(hex, end) + "\r\n" + body + "\r\n0\r\n\r\n";
}

// Reads requests (headers + Content-Length body) and writes the canned reply to each.
struct ProbeConn : std::enable_shared_from_this<ProbeConn> {
  ProbeConn(tcp::socket s, const std::string& r) : sock(std::move(s)), reply(r) {}
  tcp::socket sock;
  const std::string& reply;
  std::string in;
  std::array<char, 16384> buf{};

  void read() {
    sock.async_read_some(net::buffer(buf),
                         [self = shared_from_this()](boost::system::error_code ec, std::size_t n) {
                           if (ec) return;
                           self->in.append(self->buf.data(), n);
                           self->serve();
                         });
  }

  void serve() {
    const auto end = in.find("\r\n\r\n");
    if (end == std::string::npos) return read();
    std::size_t length = 0;
    const auto cl = in.find("Content-Length: ");
    if (cl != std::string::npos && cl < end)
      std::from_chars(in.data() + cl + 16, in.data() + end, length);
    if (in.size() < end + 4 + length) return read();
    in.erase(0, end + 4 + length);
    net::async_write(sock, net::buffer(reply),
                     [self = shared_from_this()](boost::system::error_code ec, std::size_t) {
                       if (!ec) self->serve();
                     });
  }
};

}  // namespace

struct OverheadProbeServer::Impl {
  explicit Impl(int n)
      : reply(canned_response(n)),
        acceptor(ioc, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0)) {
    accept();
    thread = std::thread([this] { ioc.run(); });
  }
  ~Impl() {
    ioc.stop();
    thread.join();
  }
  void accept() {
    acceptor.async_accept([this](boost::system::error_code ec, tcp::socket s) {
      if (ec) return;
      boost::system::error_code ignored;
      s.set_option(tcp::no_delay(true), ignored);
      std::make_shared<ProbeConn>(std::move(s), reply)->read();
      accept();
    });
  }

  std::string reply;
  net::io_context ioc{1};
  tcp::acceptor acceptor;
  std::thread thread;
};

OverheadProbeServer::OverheadProbeServer(int num_chunks)
    : impl_(std::make_unique<Impl>(num_chunks)) {}
OverheadProbeServer::~OverheadProbeServer() = default;
uint16_t OverheadProbeServer::port() const { return impl_->acceptor.local_endpoint().port(); }

}  // namespace macserve::loadgen
