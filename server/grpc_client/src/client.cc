#include "macserve/grpc_client/client.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <iterator>

#include <grpcpp/grpcpp.h>

#include "macserve/v1/generate.grpc.pb.h"

namespace macserve::grpc_client {
namespace {

CallStatus from_grpc(const grpc::Status& s) {
  return {static_cast<int>(s.error_code()), s.error_message()};
}

std::chrono::system_clock::time_point after(double seconds) {
  return std::chrono::system_clock::now() +
         std::chrono::duration_cast<std::chrono::system_clock::duration>(
             std::chrono::duration<double>(seconds));
}

}  // namespace

struct GrpcClient::Impl {
  ClientOptions options;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<macserve::v1::Generation::Stub> stub;

  void prepare(grpc::ClientContext& ctx, double timeout_seconds) const {
    if (!options.api_key.empty()) ctx.AddMetadata("authorization", "Bearer " + options.api_key);
    if (timeout_seconds > 0) ctx.set_deadline(after(timeout_seconds));
  }
};

GrpcClient::GrpcClient(ClientOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->options = std::move(options);
  grpc::ChannelArguments args;
  const int max_bytes =
      static_cast<int>(std::min<int64_t>(impl_->options.max_message_bytes, INT32_MAX));
  args.SetMaxReceiveMessageSize(max_bytes);
  args.SetMaxSendMessageSize(max_bytes);
  impl_->channel =
      grpc::CreateCustomChannel(impl_->options.target, grpc::InsecureChannelCredentials(), args);
  impl_->stub = macserve::v1::Generation::NewStub(impl_->channel);
}

GrpcClient::~GrpcClient() = default;

bool GrpcClient::wait_ready(double timeout_seconds) {
  return impl_->channel->WaitForConnected(after(timeout_seconds));
}

CallStatus GrpcClient::generate(const macserve::v1::GenerateRequest& request,
                                const ResponseCallback& on_response, double timeout_seconds) {
  grpc::ClientContext ctx;
  impl_->prepare(ctx, timeout_seconds);
  auto reader = impl_->stub->Generate(&ctx, request);
  macserve::v1::GenerateResponse response;
  while (reader->Read(&response)) {
    if (on_response && !on_response(response)) {
      ctx.TryCancel();
      // Drain what is in flight so that Finish() returns promptly.
      while (reader->Read(&response)) {
      }
      break;
    }
  }
  return from_grpc(reader->Finish());
}

CallStatus GrpcClient::abort(const std::vector<std::string>& request_ids, int32_t* num_aborted) {
  grpc::ClientContext ctx;
  impl_->prepare(ctx, 0.0);
  macserve::v1::AbortRequest req;
  for (const auto& id : request_ids) req.add_request_ids(id);
  macserve::v1::AbortResponse resp;
  CallStatus s = from_grpc(impl_->stub->Abort(&ctx, req, &resp));
  if (num_aborted != nullptr) *num_aborted = s.ok() ? resp.num_aborted() : 0;
  return s;
}

CallStatus GrpcClient::get_model_info(macserve::v1::GetModelInfoResponse* out) {
  grpc::ClientContext ctx;
  impl_->prepare(ctx, 0.0);
  return from_grpc(impl_->stub->GetModelInfo(&ctx, macserve::v1::GetModelInfoRequest{}, out));
}

CallStatus GrpcClient::get_server_info(macserve::v1::GetServerInfoResponse* out) {
  grpc::ClientContext ctx;
  impl_->prepare(ctx, 0.0);
  return from_grpc(impl_->stub->GetServerInfo(&ctx, macserve::v1::GetServerInfoRequest{}, out));
}

const char* status_code_name(int code) {
  static const char* const kNames[] = {"OK",
                                       "CANCELLED",
                                       "UNKNOWN",
                                       "INVALID_ARGUMENT",
                                       "DEADLINE_EXCEEDED",
                                       "NOT_FOUND",
                                       "ALREADY_EXISTS",
                                       "PERMISSION_DENIED",
                                       "RESOURCE_EXHAUSTED",
                                       "FAILED_PRECONDITION",
                                       "ABORTED",
                                       "OUT_OF_RANGE",
                                       "UNIMPLEMENTED",
                                       "INTERNAL",
                                       "UNAVAILABLE",
                                       "DATA_LOSS",
                                       "UNAUTHENTICATED"};
  if (code < 0 || code >= static_cast<int>(std::size(kNames))) return "UNKNOWN";
  return kNames[code];
}

std::string CallStatus::to_string() const {
  if (ok()) return "OK";
  return std::string(status_code_name(code)) + ": " + message;
}

}  // namespace macserve::grpc_client
