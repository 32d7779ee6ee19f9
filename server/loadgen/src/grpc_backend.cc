// grpc: streaming Generate of macserve.v1.Generation on gRPC's callback API (one reactor per call,
// no thread per request). Token arrivals are taken per Chunk that carries tokens; counts come from
// the final Complete message. Replies arrive on gRPC's threads; each record is written only by its
// own call's callbacks (which gRPC runs one at a time) and handed to the runner through a post.
#include <utility>  // before Asio (Boost 1.74 + g++ 12 in C++20)

#include <grpcpp/grpcpp.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include "macserve/core/error.h"
#include "macserve/grpc_client/client.h"
#include "macserve/loadgen/backend.h"
#include "macserve/v1/generate.grpc.pb.h"

namespace macserve::loadgen {
namespace {

namespace v1 = macserve::v1;

const char* finish_reason_name(v1::FinishReason r) {
  switch (r) {
    case v1::FINISH_REASON_STOP:
      return "stop";
    case v1::FINISH_REASON_LENGTH:
      return "length";
    case v1::FINISH_REASON_ABORT:
      return "abort";
    default:
      return "";  // unspecified, and protobuf's open-enum sentinels
  }
}

class GenerateCall final : public grpc::ClientReadReactor<v1::GenerateResponse> {
 public:
  GenerateCall(boost::asio::io_context& ioc, v1::Generation::Stub& stub, const BackendOptions& opt,
               const SampleRequest& sample, RequestRecord& rec, Clock::time_point start,
               std::function<void()> done)
      : ioc_(ioc), rec_(rec), start_(start), done_(std::move(done)) {
    if (!opt.api_key.empty()) ctx_.AddMetadata("authorization", "Bearer " + opt.api_key);
    if (opt.timeout_s > 0)
      ctx_.set_deadline(std::chrono::system_clock::now() +
                        std::chrono::duration_cast<std::chrono::system_clock::duration>(
                            std::chrono::duration<double>(opt.timeout_s)));
    if (opt.endpoint == "chat") {
      v1::ChatMessage* m = req_.mutable_chat()->add_messages();
      m->set_role("user");
      m->set_content(sample.prompt);
    } else {
      req_.set_text(sample.prompt);
    }
    v1::SamplingParams* sp = req_.mutable_sampling();
    sp->set_temperature(static_cast<float>(opt.temperature));
    sp->set_max_tokens(static_cast<int32_t>(sample.output_len));
    if (opt.ignore_eos) sp->set_ignore_eos(true);
    req_.set_stream(true);
    stub.async()->Generate(&ctx_, &req_, this);
    StartRead(&resp_);
    StartCall();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // the stream ended: OnDone follows
    const auto now = Clock::now();
    if (resp_.has_chunk()) {
      const v1::Chunk& c = resp_.chunk();
      if (c.token_ids_size() > 0 || !c.text().empty()) {
        const double t = std::chrono::duration<double>(now - start_).count();
        if (rec_.chunk_times_s.empty()) rec_.ttft_s = t;
        rec_.chunk_times_s.push_back(t);
        rec_.latency_s = t;
      }
      rec_.generated_text += c.text();
    } else if (resp_.has_complete()) {
      const v1::Complete& c = resp_.complete();
      saw_complete_ = true;
      rec_.finish_reason = finish_reason_name(c.finish_reason());
      rec_.server_prompt_tokens = c.prompt_tokens();
      rec_.output_tokens = c.completion_tokens();
    }
    StartRead(&resp_);
  }

  void OnDone(const grpc::Status& s) override {
    if (!s.ok()) {
      rec_.error_kind =
          std::string("grpc_") + grpc_client::status_code_name(static_cast<int>(s.error_code()));
      rec_.error = s.error_message();
    } else if (!saw_complete_) {
      rec_.error_kind = "disconnect";
      rec_.error = "the Generate stream ended without a Complete message";
    } else {
      rec_.success = true;
      if (rec_.chunk_times_s.empty())
        rec_.latency_s = std::chrono::duration<double>(Clock::now() - start_).count();
    }
    boost::asio::post(ioc_, [this] {
      auto done = std::move(done_);
      delete this;  // gRPC does not touch a reactor after OnDone
      done();
    });
  }

 private:
  boost::asio::io_context& ioc_;
  RequestRecord& rec_;
  Clock::time_point start_;
  std::function<void()> done_;
  grpc::ClientContext ctx_;
  v1::GenerateRequest req_;
  v1::GenerateResponse resp_;
  bool saw_complete_ = false;
};

class GrpcBackend final : public Backend {
 public:
  GrpcBackend(boost::asio::io_context& ioc, const BackendOptions& opt) : ioc_(ioc), opt_(opt) {
    target_ = opt.url.host + ":" + std::to_string(opt.url.port);
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(64 << 20);
    channel_ = grpc::CreateCustomChannel(target_, grpc::InsecureChannelCredentials(), args);
    stub_ = v1::Generation::NewStub(channel_);
    if (!channel_->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10)))
      throw_error(ErrorCode::kInvalidArgument, "cannot reach the gRPC server at {}", target_);
  }

  std::string endpoint() const override {
    return opt_.endpoint == "chat" ? "macserve.v1.Generation/Generate (chat)"
                                   : "macserve.v1.Generation/Generate";
  }

  void send(const SampleRequest& sample, RequestRecord& rec, Clock::time_point start,
            std::function<void()> done) override {
    new GenerateCall(ioc_, *stub_, opt_, sample, rec, start, std::move(done));
  }

 private:
  boost::asio::io_context& ioc_;
  BackendOptions opt_;
  std::string target_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Generation::Stub> stub_;
};

}  // namespace

std::unique_ptr<Backend> make_grpc_backend(boost::asio::io_context& ioc,
                                           const BackendOptions& opt) {
  if (!opt.endpoint.empty() && opt.endpoint != "chat" && opt.endpoint != "text")
    throw_error(ErrorCode::kInvalidArgument,
                "--backend grpc: --endpoint is text (default) or chat, not '{}'", opt.endpoint);
  return std::make_unique<GrpcBackend>(ioc, opt);
}

std::string grpc_model_name(const BackendOptions& opt) {
  grpc_client::ClientOptions co;
  co.target = opt.url.host + ":" + std::to_string(opt.url.port);
  co.api_key = opt.api_key;
  grpc_client::GrpcClient client(co);
  if (!client.wait_ready(10))
    throw_error(ErrorCode::kInvalidArgument, "cannot reach the gRPC server at {}", co.target);
  v1::GetModelInfoResponse info;
  const auto st = client.get_model_info(&info);
  if (!st.ok())
    throw_error(ErrorCode::kInvalidArgument, "GetModelInfo at {}: {}", co.target, st.to_string());
  return info.name();
}

}  // namespace macserve::loadgen
