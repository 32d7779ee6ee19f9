// One Generate call: a server-streaming reactor over one engine request. Engine outputs arrive on
// the engine thread (ResponseStream listener); gRPC reactions on gRPC's threads. Every decision
// is taken under the call's mutex, and the gRPC operation it names (StartWrite or Finish) runs
// after the mutex is released. One write is in flight at a time; outputs produced meanwhile stay
// in the ResponseStream and go out merged with the next write (back-pressure without buffering).
#include <chrono>
#include <deque>
#include <optional>
#include <random>

#include <spdlog/spdlog.h>

#include "generation_service.h"
#include "macserve/openai/request_ids.h"
#include "request_mapping.h"

namespace macserve::grpc_server {
namespace {

using openai::random_hex;
using openai::usable_request_id;

namespace v1 = macserve::v1;
using Clock = std::chrono::steady_clock;

class GenerateCall final : public grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  GenerateCall(GenerationService& svc, grpc::CallbackServerContext* ctx,
               const v1::GenerateRequest& req)
      : svc_(svc), st_(svc.state()), shared_(std::make_shared<Shared>()), started_(Clock::now()) {
    shared_->call = this;
    const grpc::Status s = start(*ctx, req);
    if (!s.ok()) {
      finish_called_ = true;
      status_code_ = s.error_code();
      Finish(s);
    }
  }

  void OnWriteDone(bool ok) override {
    {
      std::lock_guard lock(shared_->mu);
      writing_ = false;
      pending_.pop_front();
      if (!ok) {  // the client is gone
        write_failed_ = true;
        stream_->cancel();
      }
    }
    pump(*shared_);
  }

  void OnCancel() override {
    {
      std::lock_guard lock(shared_->mu);
      cancelled_ = true;
      if (stream_)
        stream_->cancel();  // the engine frees the request's KV blocks at its next iteration
    }
    pump(*shared_);
  }

  void OnDone() override {
    {
      std::lock_guard lock(shared_->mu);
      shared_->call = nullptr;
    }
    if (stream_) {
      stream_->set_listener(nullptr);
      for (std::size_t i = 0; i < finished_.size(); ++i)
        if (!finished_[i]) {  // never finished: counts as aborted, as HTTP's disconnects do
          engine::RequestOutput aborted;
          aborted.finished = true;
          aborted.finish_reason = engine::FinishReason::kAbort;
          st_.metrics->on_completion_finished(aborted, metrics::Frontend::kGrpc);
        }
      st_.active_generations->fetch_sub(1);
    }
    if (st_.options.access_log)
      spdlog::info("grpc Generate request_id={} {} {} tokens {:.1f} ms", id_.empty() ? "-" : id_,
                   status_name(status_code_), tokens_,
                   std::chrono::duration<double, std::milli>(Clock::now() - started_).count());
    delete this;
  }

 private:
  struct Shared {
    std::mutex mu;
    GenerateCall* call = nullptr;  // null once the call is done
  };
  enum class Step { kNone, kWrite, kFinish };

  static const char* status_name(grpc::StatusCode c) {
    switch (c) {
      case grpc::StatusCode::OK:
        return "OK";
      case grpc::StatusCode::CANCELLED:
        return "CANCELLED";
      case grpc::StatusCode::INVALID_ARGUMENT:
        return "INVALID_ARGUMENT";
      case grpc::StatusCode::NOT_FOUND:
        return "NOT_FOUND";
      case grpc::StatusCode::RESOURCE_EXHAUSTED:
        return "RESOURCE_EXHAUSTED";
      case grpc::StatusCode::UNAVAILABLE:
        return "UNAVAILABLE";
      case grpc::StatusCode::UNAUTHENTICATED:
        return "UNAUTHENTICATED";
      default:
        return "ERROR";
    }
  }

  grpc::Status start(const grpc::CallbackServerContext& ctx, const v1::GenerateRequest& req) {
    if (grpc::Status s = svc_.check_auth(ctx); !s.ok()) return s;
    engine::Engine* eng = nullptr;
    if (grpc::Status s = svc_.check_ready(&eng); !s.ok()) return s;
    if (!req.request_id().empty() && !usable_request_id(req.request_id()))
      return {grpc::StatusCode::INVALID_ARGUMENT,
              "Invalid 'request_id': use 1 to 256 letters, digits, '-', '_', '.' or ':'."};
    id_ = req.request_id().empty() ? random_hex(16) : req.request_id();
    auto mapped = map_request(req, *st_.model);
    if (const auto* e = std::get_if<openai::ApiError>(&mapped))
      return {static_cast<grpc::StatusCode>(status_code_for(*e)), e->message};
    MappedRequest& m = std::get<MappedRequest>(mapped);
    assembler_.emplace(m, id_);
    const auto n = static_cast<std::size_t>(std::max(m.request.n, 1));
    finished_.assign(n, false);
    last_output_.assign(n, Clock::time_point{});
    m.request.id = id_;
    st_.active_generations->fetch_add(1);
    stream_ = eng->submit(std::move(m.request));
    svc_.registry().add(id_, stream_);
    stream_->set_listener([weak = std::weak_ptr<Shared>(shared_)] {
      if (auto s = weak.lock()) pump(*s);
    });
    pump(*shared_);  // outputs pushed before the listener was set
    return grpc::Status::OK;
  }

  static void pump(Shared& shared) {
    const v1::GenerateResponse* msg = nullptr;
    grpc::Status status;
    GenerateCall* call = nullptr;
    Step step = Step::kNone;
    {
      std::lock_guard lock(shared.mu);
      call = shared.call;
      if (call == nullptr) return;
      step = call->decide(&msg, &status);
    }
    // The call cannot be deleted in between: OnDone comes only after Finish, and Finish is not
    // decided while a write is in flight. The id leaves the Abort registry before the client can
    // see the end of the call, so an Abort sent after the call returned finds nothing to abort.
    if (step == Step::kWrite) {
      call->StartWrite(msg);
    } else if (step == Step::kFinish) {
      if (call->stream_) call->svc_.registry().remove(call->id_, call->stream_.get());
      call->Finish(status);
    }
  }

  // Under shared_->mu.
  Step decide(const v1::GenerateResponse** msg, grpc::Status* status) {
    if (finish_called_ || writing_) return Step::kNone;
    if (write_failed_ || cancelled_)
      return finish(grpc::Status(grpc::StatusCode::CANCELLED, "the call was cancelled"), status);
    if (pending_.empty() && !stream_done_) take_outputs();
    if (error_) {
      stream_->cancel();
      return finish(*error_, status);
    }
    if (!pending_.empty()) {
      writing_ = true;
      *msg = &pending_.front();
      return Step::kWrite;
    }
    if (stream_done_) return finish(grpc::Status::OK, status);
    return Step::kNone;
  }

  Step finish(grpc::Status s, grpc::Status* out) {
    finish_called_ = true;
    status_code_ = s.error_code();
    *out = std::move(s);
    return Step::kFinish;
  }

  void take_outputs() {
    std::vector<engine::RequestOutput> outs;
    stream_done_ = stream_->poll(outs);
    const auto now = Clock::now();
    for (const engine::RequestOutput& out : outs) {
      if (out.finish_reason == engine::FinishReason::kError) {
        const openai::ApiError e = openai::error_from_engine(out);
        if (!error_)
          error_ = grpc::Status(static_cast<grpc::StatusCode>(status_code_for(e)), e.message);
      }
      const auto i = static_cast<std::size_t>(out.index);
      if (i >= finished_.size()) continue;
      tokens_ += static_cast<int64_t>(out.tokens.size());
      if (!out.tokens.empty()) {
        if (last_output_[i] != Clock::time_point{})
          st_.metrics->observe_inter_token(
              std::chrono::duration<double>(now - last_output_[i]).count(),
              static_cast<int64_t>(out.tokens.size()), metrics::Frontend::kGrpc);
        last_output_[i] = now;
      }
      if (out.finished && !finished_[i]) {
        finished_[i] = true;
        st_.metrics->on_completion_finished(out, metrics::Frontend::kGrpc);
      }
    }
    if (error_) return;
    std::vector<v1::GenerateResponse> msgs;
    assembler_->add(outs, &msgs);
    for (auto& m : msgs) pending_.push_back(std::move(m));
  }

  GenerationService& svc_;
  GrpcServeState& st_;
  std::shared_ptr<Shared> shared_;
  Clock::time_point started_;
  std::string id_;
  std::shared_ptr<engine::ResponseStream> stream_;
  std::optional<OutputAssembler> assembler_;
  std::deque<v1::GenerateResponse> pending_;  // front: being written
  std::vector<bool> finished_;                // [index]
  std::vector<Clock::time_point> last_output_;
  std::optional<grpc::Status> error_;
  bool writing_ = false, finish_called_ = false, cancelled_ = false, write_failed_ = false,
       stream_done_ = false;
  grpc::StatusCode status_code_ = grpc::StatusCode::OK;
  int64_t tokens_ = 0;
};

}  // namespace

grpc::ServerWriteReactor<v1::GenerateResponse>* GenerationService::Generate(
    grpc::CallbackServerContext* ctx, const v1::GenerateRequest* request) {
  return new GenerateCall(*this, ctx, *request);
}

}  // namespace macserve::grpc_server
