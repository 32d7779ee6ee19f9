#include "macserve/http/server.h"

#include <csignal>
#include <mutex>
#include <thread>

#include <spdlog/spdlog.h>

#include "macserve/core/error.h"
#include "session.h"

namespace macserve::http {

struct HttpServer::Impl {
  explicit Impl(ServeState& s)
      : st(s), ioc(std::max(1, s.options.threads)), acceptor(ioc), signals(ioc, SIGINT, SIGTERM) {}

  void accept() {
    acceptor.async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
      if (ec == net::error::operation_aborted || !acceptor.is_open()) return;
      if (!ec)
        on_accept(std::move(socket));
      else
        spdlog::warn("accept: {}", ec.message());
      accept();
    });
  }

  void on_accept(tcp::socket socket) {
    if (st.connections.load() >= st.options.max_connections) {
      // Over the limit: a short 503 written without waiting, then close.
      static const std::string kBody =
          R"({"error":{"message":"too many open connections","type":"service_unavailable","param":null,"code":null}})";
      static const std::string kBusy =
          "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
          "Connection: close\r\nContent-Length: " +
          std::to_string(kBody.size()) + "\r\n\r\n" + kBody;
      beast::error_code ec;
      socket.non_blocking(true, ec);
      socket.write_some(net::buffer(kBusy), ec);
      socket.shutdown(tcp::socket::shutdown_both, ec);
      socket.close(ec);
      st.metrics->on_http_response(503);
      return;
    }
    // SSE chunks are small writes: without TCP_NODELAY, Nagle holds each one back until the
    // client's delayed ACK (~40 ms on Linux), which would show up in TTFT and every ITL.
    beast::error_code nodelay_ec;
    socket.set_option(tcp::no_delay(true), nodelay_ec);
    auto session = std::make_shared<Session>(std::move(socket), st);
    {
      std::lock_guard lock(mu);
      std::erase_if(sessions, [](const std::weak_ptr<Session>& w) { return w.expired(); });
      sessions.push_back(session);
    }
    session->start();
  }

  ServeState& st;
  net::io_context ioc;
  tcp::acceptor acceptor;
  net::signal_set signals;
  std::vector<std::thread> threads;
  std::mutex mu;
  std::condition_variable cv;
  bool signalled = false;
  std::vector<std::weak_ptr<Session>> sessions;
  int port = 0;
};

HttpServer::HttpServer(ServeState& state) : impl_(std::make_unique<Impl>(state)) {
  Impl& m = *impl_;
  const HttpOptions& o = state.options;
  beast::error_code ec;
  const auto address = net::ip::make_address(o.host, ec);
  if (ec)
    throw_error(ErrorCode::kInvalidArgument, "--host '{}' is not an IP address: {}", o.host,
                ec.message());
  if (o.port < 0 || o.port > 65535)
    throw_error(ErrorCode::kInvalidArgument, "--port {} is out of range", o.port);
  const tcp::endpoint ep(address, static_cast<unsigned short>(o.port));
  m.acceptor.open(ep.protocol(), ec);
  if (!ec) m.acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) m.acceptor.bind(ep, ec);
  if (!ec) m.acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec)
    throw_error(ErrorCode::kInvalidArgument, "cannot listen on {}:{}: {}", o.host, o.port,
                ec.message());
  m.port = m.acceptor.local_endpoint().port();
  m.signals.async_wait([&m](beast::error_code sec, int signo) {
    if (sec) return;
    spdlog::info("received signal {}: draining (no new requests; running ones finish)", signo);
    m.st.draining.store(true);
    if (m.st.on_drain) m.st.on_drain();
    beast::error_code ignored;
    m.acceptor.close(ignored);
    {
      std::lock_guard lock(m.mu);
      m.signalled = true;
    }
    m.cv.notify_all();
  });
  m.accept();
  for (int i = 0; i < std::max(1, o.threads); ++i) m.threads.emplace_back([&m] { m.ioc.run(); });
}

HttpServer::~HttpServer() { stop(); }

int HttpServer::port() const { return impl_->port; }

bool HttpServer::stop_requested() const {
  std::lock_guard lock(impl_->mu);
  return impl_->signalled;
}

int64_t HttpServer::wait_and_drain() {
  Impl& m = *impl_;
  {
    std::unique_lock lock(m.mu);
    m.cv.wait(lock, [&] { return m.signalled; });
  }
  const auto deadline =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(
                         std::chrono::duration<double>(m.st.options.drain_timeout));
  while (m.st.active_generations.load() > 0 && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const int64_t left = m.st.active_generations.load();
  if (left > 0)
    spdlog::warn("drain: {} requests still running after {} s; aborting them", left,
                 m.st.options.drain_timeout);
  // Let the last responses leave the socket.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  return left;
}

void HttpServer::stop() {
  Impl& m = *impl_;
  if (m.threads.empty()) return;
  net::post(m.ioc, [&m] {
    beast::error_code ec;
    m.acceptor.close(ec);
    m.signals.cancel(ec);
  });
  {
    std::lock_guard lock(m.mu);
    for (auto& w : m.sessions)
      if (auto s = w.lock()) s->close();
  }
  // Give the closes a moment, then stop the loop whatever is left.
  const auto until = Clock::now() + std::chrono::milliseconds(500);
  while (m.st.connections.load() > 0 && Clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  m.ioc.stop();
  for (auto& t : m.threads) t.join();
  m.threads.clear();
}

}  // namespace macserve::http
