// GrpcServer: builds the gRPC server (Generation service, health, reflection, limits, keepalive).
#include "macserve/grpc/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <spdlog/spdlog.h>

#include "generation_service.h"
#include "macserve/core/error.h"

namespace macserve::grpc_server {
namespace {

int millis(double seconds) { return static_cast<int>(std::min(seconds * 1000.0, 2.0e9)); }

}  // namespace

struct GrpcServer::Impl {
  explicit Impl(GrpcServeState& s) : st(s), service(s) {}
  GrpcServeState& st;
  GenerationService service;
  std::unique_ptr<grpc::Server> server;
  int port = 0;
  bool stopped = false;
};

GrpcServer::GrpcServer(GrpcServeState& state) : impl_(std::make_unique<Impl>(state)) {
  const GrpcOptions& o = state.options;
  if (o.port < 0 || o.port > 65535)
    throw_error(ErrorCode::kInvalidArgument, "--grpc-port {} is out of range", o.port);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  const std::string host =
      o.host.find(':') != std::string::npos && o.host.front() != '[' ? "[" + o.host + "]" : o.host;
  builder.AddListeningPort(host + ":" + std::to_string(o.port), grpc::InsecureServerCredentials(),
                           &impl_->port);
  builder.RegisterService(&impl_->service);
  const int max_bytes = static_cast<int>(std::min<int64_t>(o.max_message_bytes, INT32_MAX));
  builder.SetMaxReceiveMessageSize(max_bytes);
  builder.SetMaxSendMessageSize(max_bytes);
  // Linux gRPC sets SO_REUSEPORT by default: a second server could then share a busy port.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS,
                             o.keepalive_time > 0 ? millis(o.keepalive_time) : INT32_MAX);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, millis(o.keepalive_timeout));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                             millis(o.min_ping_interval));
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  impl_->server = builder.BuildAndStart();
  if (impl_->server == nullptr || impl_->port == 0)
    throw_error(ErrorCode::kInvalidArgument,
                "cannot listen for gRPC on {}:{} (address in use or invalid --grpc-host)", o.host,
                o.port);
  set_serving(false);
}

GrpcServer::~GrpcServer() { stop(0.0); }

int GrpcServer::port() const { return impl_->port; }

void GrpcServer::set_serving(bool serving) {
  grpc::HealthCheckServiceInterface* health = impl_->server->GetHealthCheckService();
  if (health == nullptr) return;
  health->SetServingStatus(serving);  // every service, "" included
  health->SetServingStatus("macserve.v1.Generation", serving);
}

void GrpcServer::stop(double grace_seconds) {
  if (impl_->stopped) return;
  impl_->stopped = true;
  set_serving(false);
  impl_->server->Shutdown(std::chrono::system_clock::now() +
                          std::chrono::duration_cast<std::chrono::system_clock::duration>(
                              std::chrono::duration<double>(std::max(grace_seconds, 0.0))));
  impl_->server->Wait();
}

}  // namespace macserve::grpc_server
