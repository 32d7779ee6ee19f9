// The unary RPCs of macserve.v1.Generation, auth and readiness checks, the Abort registry.
#include "generation_service.h"

#include <algorithm>

#include "macserve/openai/request_ids.h"
namespace macserve::grpc_server {
namespace {

using openai::constant_time_equal;

namespace v1 = macserve::v1;

grpc::ServerUnaryReactor* finish(grpc::CallbackServerContext* ctx, const grpc::Status& s) {
  grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
  r->Finish(s);
  return r;
}

}  // namespace

void CallRegistry::add(const std::string& id,
                       const std::shared_ptr<engine::ResponseStream>& stream) {
  std::lock_guard lock(mu_);
  calls_.emplace(id, stream);
}

void CallRegistry::remove(const std::string& id, const engine::ResponseStream* stream) {
  std::lock_guard lock(mu_);
  auto [first, last] = calls_.equal_range(id);
  for (auto it = first; it != last; ++it) {
    const auto s = it->second.lock();
    if (s == nullptr || s.get() == stream) {
      calls_.erase(it);
      return;
    }
  }
}

int32_t CallRegistry::abort(const std::string& id) {
  std::lock_guard lock(mu_);
  int32_t n = 0;
  auto [first, last] = calls_.equal_range(id);
  for (auto it = first; it != last; ++it) {
    if (auto s = it->second.lock()) {
      s->cancel();
      ++n;
    }
  }
  return n;
}

grpc::Status GenerationService::check_auth(const grpc::CallbackServerContext& ctx) const {
  if (st_.options.api_key.empty()) return grpc::Status::OK;
  const auto& md = ctx.client_metadata();
  const auto it = md.find("authorization");
  constexpr std::string_view kBearer = "Bearer ";
  if (it != md.end()) {
    const std::string_view v(it->second.data(), it->second.size());
    if (v.size() >= kBearer.size() && v.substr(0, kBearer.size()) == kBearer &&
        constant_time_equal(v.substr(kBearer.size()), st_.options.api_key))
      return grpc::Status::OK;
  }
  return {grpc::StatusCode::UNAUTHENTICATED,
          "invalid or missing API key (send metadata authorization: Bearer <key>)"};
}

grpc::Status GenerationService::check_ready(engine::Engine** out) const {
  engine::Engine* e = st_.engine->load(std::memory_order_acquire);
  if (e == nullptr) return {grpc::StatusCode::UNAVAILABLE, "the model is still loading"};
  if (st_.draining->load()) return {grpc::StatusCode::UNAVAILABLE, "the server is shutting down"};
  *out = e;
  return grpc::Status::OK;
}

grpc::ServerUnaryReactor* GenerationService::Abort(grpc::CallbackServerContext* ctx,
                                                   const v1::AbortRequest* request,
                                                   v1::AbortResponse* response) {
  if (grpc::Status s = check_auth(*ctx); !s.ok()) return finish(ctx, s);
  int32_t n = 0;
  for (const std::string& id : request->request_ids()) n += registry_.abort(id);
  response->set_num_aborted(n);
  return finish(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* GenerationService::GetModelInfo(grpc::CallbackServerContext* ctx,
                                                          const v1::GetModelInfoRequest*,
                                                          v1::GetModelInfoResponse* response) {
  if (grpc::Status s = check_auth(*ctx); !s.ok()) return finish(ctx, s);
  engine::Engine* e = st_.engine->load(std::memory_order_acquire);
  if (e == nullptr)
    return finish(ctx, {grpc::StatusCode::UNAVAILABLE, "the model is still loading"});
  const auto& tok = e->tokenizer();
  response->set_name(st_.model->name);
  response->set_architecture(e->model_config().architecture);
  response->set_max_context(e->max_model_len());
  response->set_vocab_size(tok.vocab_size());
  for (const int64_t id : {static_cast<int64_t>(tok.eos_id()), e->model_config().eos_token_id}) {
    const auto& have = response->eos_token_ids();
    if (id >= 0 && std::find(have.begin(), have.end(), id) == have.end())
      response->add_eos_token_ids(static_cast<int32_t>(id));
  }
  response->set_bos_token_id(tok.bos_id());
  response->set_has_chat_template(st_.model->chat_template != nullptr);
  return finish(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* GenerationService::GetServerInfo(grpc::CallbackServerContext* ctx,
                                                           const v1::GetServerInfoRequest*,
                                                           v1::GetServerInfoResponse* response) {
  if (grpc::Status s = check_auth(*ctx); !s.ok()) return finish(ctx, s);
  const EngineInfo& info = st_.engine_info;
  response->set_version(st_.version);
  response->set_max_num_seqs(info.max_num_seqs);
  response->set_max_num_batched_tokens(info.max_num_batched_tokens);
  response->set_max_queued_requests(info.max_queued_requests);
  response->set_block_size(info.block_size);
  response->set_prefix_caching(info.prefix_caching);
  response->set_attention(info.attention);
  response->set_mac_threshold(info.mac_threshold);
  response->set_mac_window(info.mac_window);
  response->set_mac_band(info.mac_band);
  response->set_mac_min_context(info.mac_min_context);
  response->set_uptime_seconds(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - st_.started).count());
  // While the model loads only the configuration is known.
  if (engine::Engine* e = st_.engine->load(std::memory_order_acquire); e != nullptr) {
    const engine::EngineStats stats = e->stats();
    response->set_device(e->device_name());
    response->set_kv_capacity_tokens(stats.num_blocks * info.block_size);
    response->set_num_running(stats.num_running);
    response->set_num_waiting(stats.num_waiting);
    response->set_kv_cache_usage(stats.kv_cache_usage());
  }
  return finish(ctx, grpc::Status::OK);
}

}  // namespace macserve::grpc_server
