#include "macserve/loadgen/runner.h"

#include <utility>  // before Asio (Boost 1.74 + g++ 12 in C++20)

#include <sys/resource.h>
#include <unistd.h>

#include <boost/asio.hpp>
#include <cmath>
#include <cstdio>
#include <deque>

#include "macserve/loadgen/arrival.h"

namespace macserve::loadgen {
namespace {

double thread_cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_THREAD, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

// completed/total, rate and ETA: redrawn in place on a terminal, a plain line per 10% otherwise.
class Progress {
 public:
  Progress(int64_t total, bool enabled)
      : total_(total), enabled_(enabled && total > 0), tty_(isatty(STDERR_FILENO) != 0) {}
  void update(int64_t done, double elapsed) {
    if (!enabled_) return;
    const double rate = elapsed > 0 ? static_cast<double>(done) / elapsed : 0;
    const double eta = rate > 0 ? static_cast<double>(total_ - done) / rate : 0;
    if (tty_) {
      const int width = 30;
      const auto filled = static_cast<int>(width * done / total_);
      std::fprintf(stderr, "\r[%.*s%*s] %lld/%lld  %.2f req/s  ETA %.0fs ", filled,
                   "##############################", width - filled, "",
                   static_cast<long long>(done), static_cast<long long>(total_), rate, eta);
      if (done == total_) std::fputc('\n', stderr);
    } else if (done * 10 / total_ != last_decile_ || done == total_) {
      last_decile_ = done * 10 / total_;
      std::fprintf(stderr, "progress: %lld/%lld requests, %.2f req/s, %.1f s elapsed\n",
                   static_cast<long long>(done), static_cast<long long>(total_), rate, elapsed);
    }
    std::fflush(stderr);
  }

 private:
  int64_t total_;
  bool enabled_;
  bool tty_;
  int64_t last_decile_ = 0;
};

struct Run {
  Run(boost::asio::io_context& c, Backend& b, const std::vector<SampleRequest>& s,
      const LoadOptions& o)
      : ioc(c),
        backend(b),
        samples(s),
        opt(o),
        arrivals(c),
        limit(c),
        guard(boost::asio::make_work_guard(c)),
        progress(static_cast<int64_t>(s.size()), o.progress) {}

  boost::asio::io_context& ioc;
  Backend& backend;
  const std::vector<SampleRequest>& samples;
  const LoadOptions& opt;
  boost::asio::steady_timer arrivals, limit;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard;
  Progress progress;
  std::vector<double> offsets;
  std::vector<RequestRecord> records;
  std::vector<bool> sent;
  std::deque<std::size_t> ready;
  std::size_t next_arrival = 0;
  int64_t in_flight = 0, num_sent = 0, num_done = 0;
  bool stopped = false;
  Clock::time_point t0, last_end;

  double since_t0(Clock::time_point t) const {
    return std::chrono::duration<double>(t - t0).count();
  }

  void arm_arrivals() {
    while (next_arrival < offsets.size() && t0 + to_duration(offsets[next_arrival]) <= Clock::now())
      ready.push_back(next_arrival++);
    launch();
    if (next_arrival < offsets.size() && !stopped) {
      arrivals.expires_at(t0 + to_duration(offsets[next_arrival]));
      arrivals.async_wait([this](boost::system::error_code ec) {
        if (!ec) arm_arrivals();
      });
    }
  }

  static Clock::duration to_duration(double s) {
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
  }

  void launch() {
    while (!ready.empty() && !stopped &&
           (opt.max_concurrency <= 0 || in_flight < opt.max_concurrency)) {
      const std::size_t i = ready.front();
      ready.pop_front();
      RequestRecord& r = records[i];
      r.sample_index = static_cast<int64_t>(i);
      r.prompt_len = samples[i].prompt_len;
      r.max_tokens = samples[i].output_len;
      const auto now = Clock::now();
      r.start_s = since_t0(now);
      sent[i] = true;
      ++in_flight;
      ++num_sent;
      backend.send(samples[i], r, now, [this, i] { on_done(i); });
    }
  }

  void on_done(std::size_t i) {
    last_end = Clock::now();
    --in_flight;
    ++num_done;
    RequestRecord& r = records[i];
    if (r.success && !samples[i].answer.empty())
      r.answer_correct = reply_has_answer(r.generated_text, samples[i].answer);
    progress.update(num_done, since_t0(last_end));
    launch();
    maybe_finish();
  }

  // Ends the run once nothing is in flight and nothing more will be sent. Backends whose replies
  // arrive on other threads (gRPC) post to the loop; the guard keeps it running meanwhile.
  void maybe_finish() {
    if (in_flight == 0 && (stopped || (ready.empty() && next_arrival == offsets.size()))) {
      arrivals.cancel();
      limit.cancel();
      guard.reset();
    }
  }
};

}  // namespace

RunOutput run_load(boost::asio::io_context& ioc, Backend& backend,
                   const std::vector<SampleRequest>& samples, const LoadOptions& opt) {
  Run run(ioc, backend, samples, opt);
  run.offsets = arrival_offsets(static_cast<int64_t>(samples.size()), opt.request_rate,
                                opt.burstiness, opt.seed);
  run.records.resize(samples.size());
  run.sent.assign(samples.size(), false);
  const double cpu0 = thread_cpu_seconds();
  run.t0 = Clock::now();
  run.last_end = run.t0;
  if (opt.duration_s > 0) {
    run.limit.expires_after(Run::to_duration(opt.duration_s));
    run.limit.async_wait([&run](boost::system::error_code ec) {
      if (ec) return;
      run.stopped = true;
      run.arrivals.cancel();
      run.maybe_finish();
    });
  }
  ioc.restart();
  boost::asio::post(ioc, [&run] {
    run.arm_arrivals();
    run.maybe_finish();  // nothing to send at all
  });
  ioc.run();
  RunOutput out;
  out.duration_s = run.since_t0(run.last_end);
  out.client_cpu_s = thread_cpu_seconds() - cpu0;
  for (std::size_t i = 0; i < samples.size(); ++i) {
    if (run.sent[i])
      out.records.push_back(std::move(run.records[i]));
    else
      ++out.not_sent;
  }
  return out;
}

}  // namespace macserve::loadgen
