// Errors: every failure that reaches a user is a macserve::Error with a message that says what was
// wrong and where (file, tensor, field). Internal invariants use MACSERVE_CHECK too: a broken
// invariant must surface as an error, never as silent corruption.
#pragma once

#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace macserve {

enum class ErrorCode {
  kInvalidArgument,  // bad user input: flags, request fields, prompts
  kInvalidModel,     // model files that are missing, malformed or inconsistent
  kNotFound,         // a file or entity that does not exist
  kUnsupported,      // valid input that this build cannot handle
  kResourceExhausted,
  kInternal,
};

const char* to_string(ErrorCode code);

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

template <typename... Args>
[[noreturn]] void throw_error(ErrorCode code, fmt::format_string<Args...> fmt, Args&&... args) {
  throw Error(code, fmt::format(fmt, std::forward<Args>(args)...));
}

}  // namespace macserve

// Throws macserve::Error(kInternal) with the condition text and a formatted message.
#define MACSERVE_CHECK(cond, ...)                                                            \
  do {                                                                                       \
    if (!(cond)) {                                                                           \
      throw ::macserve::Error(::macserve::ErrorCode::kInternal,                              \
                              ::fmt::format("check failed: {} ({}:{}): {}", #cond, __FILE__, \
                                            __LINE__, ::fmt::format(__VA_ARGS__)));          \
    }                                                                                        \
  } while (0)
