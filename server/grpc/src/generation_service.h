// Internal: the macserve.v1.Generation service (callback API) and the registry of running calls
// that Abort looks request ids up in.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include <grpcpp/grpcpp.h>

#include "macserve/grpc/server.h"
#include "macserve/v1/generate.grpc.pb.h"

namespace macserve::grpc_server {

class CallRegistry {
 public:
  void add(const std::string& id, const std::shared_ptr<engine::ResponseStream>& stream);
  void remove(const std::string& id, const engine::ResponseStream* stream);
  // Cancels every running call with this id; returns how many there were.
  int32_t abort(const std::string& id);

 private:
  std::mutex mu_;
  std::unordered_multimap<std::string, std::weak_ptr<engine::ResponseStream>> calls_;
};

class GenerationService final : public macserve::v1::Generation::CallbackService {
 public:
  explicit GenerationService(GrpcServeState& state) : st_(state) {}

  grpc::ServerWriteReactor<macserve::v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* ctx, const macserve::v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* Abort(grpc::CallbackServerContext* ctx,
                                  const macserve::v1::AbortRequest* request,
                                  macserve::v1::AbortResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* ctx,
                                         const macserve::v1::GetModelInfoRequest* request,
                                         macserve::v1::GetModelInfoResponse* response) override;
  grpc::ServerUnaryReactor* GetServerInfo(grpc::CallbackServerContext* ctx,
                                          const macserve::v1::GetServerInfoRequest* request,
                                          macserve::v1::GetServerInfoResponse* response) override;

  // UNAUTHENTICATED unless `authorization: Bearer <--api-key>` came with the call (or no key is
  // set).
  grpc::Status check_auth(const grpc::CallbackServerContext& ctx) const;
  // UNAVAILABLE while the model loads or the server drains; else the engine in *out.
  grpc::Status check_ready(engine::Engine** out) const;

  GrpcServeState& state() { return st_; }
  CallRegistry& registry() { return registry_; }

 private:
  GrpcServeState& st_;
  CallRegistry registry_;
};

}  // namespace macserve::grpc_server
