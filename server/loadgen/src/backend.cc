#include "macserve/loadgen/backend.h"

#include "macserve/core/error.h"

namespace macserve::loadgen {

std::unique_ptr<Backend> make_backend(boost::asio::io_context& ioc, const BackendOptions& opt) {
  if (opt.name == "openai" || opt.name == "openai-chat") return make_openai_backend(ioc, opt);
  if (opt.name == "grpc") return make_grpc_backend(ioc, opt);
  throw_error(ErrorCode::kInvalidArgument,
              "--backend: unknown backend '{}' (openai, openai-chat, grpc)", opt.name);
}

}  // namespace macserve::loadgen
