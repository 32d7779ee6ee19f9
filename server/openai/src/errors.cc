// OpenAI's error envelope and the mapping of engine failures onto it.
#include <utility>

#include "json_fields.h"
#include "macserve/core/error.h"
#include "macserve/openai/protocol.h"

namespace macserve::openai {

std::string ApiError::to_json() const {
  detail::json err = {{"message", message}, {"type", type}, {"param", nullptr}, {"code", nullptr}};
  if (!param.empty()) err["param"] = param;
  if (!code.empty()) err["code"] = code;
  return detail::dump(detail::json{{"error", std::move(err)}});
}

ApiError ApiError::internal() {
  ApiError e;
  e.status = 500;
  e.type = "server_error";
  e.message = "internal server error while processing the request";
  return e;
}

ApiError detail::error_from_exception(std::exception_ptr ep) {
  try {
    std::rethrow_exception(std::move(ep));
  } catch (const detail::ApiException& e) {
    return e.error;
  } catch (const Error& e) {
    if (e.code() == ErrorCode::kInvalidArgument)
      return ApiError::invalid(detail::sanitize_utf8(e.what()));
  } catch (...) {
  }
  return ApiError::internal();
}

ApiError ApiError::invalid(std::string message, std::string param) {
  ApiError e;
  e.status = 400;
  e.message = std::move(message);
  e.param = std::move(param);
  return e;
}

// Engine messages for invalid requests and context overflow describe the request (field names,
// token counts), so they are passed on; internal failures never are.
ApiError error_from_engine(const engine::RequestOutput& out) {
  ApiError e;
  switch (out.error_kind) {
    case engine::ErrorKind::kInvalidRequest:
      e = ApiError::invalid(out.error.empty() ? "Invalid request."
                                              : detail::sanitize_utf8(out.error));
      return e;
    case engine::ErrorKind::kContextLength:
      e = ApiError::invalid(out.error.empty() ? "The request exceeds the model's context length."
                                              : detail::sanitize_utf8(out.error));
      e.code = "context_length_exceeded";
      return e;
    case engine::ErrorKind::kQueueFull:  // OpenAI's rate-limit shape
      e.status = 429;
      e.type = "requests";
      e.code = "rate_limit_exceeded";
      e.message = "The server is at capacity (too many queued requests). Please retry later.";
      return e;
    case engine::ErrorKind::kUnavailable:
      e.status = 503;
      e.type = "server_error";
      e.code = "service_unavailable";
      e.message =
          "The server is not accepting requests right now (shutting down). Please retry later.";
      return e;
    case engine::ErrorKind::kNone:  // a failure without a kind is treated as internal
    case engine::ErrorKind::kInternal:
      break;
  }
  return ApiError::internal();
}

}  // namespace macserve::openai
