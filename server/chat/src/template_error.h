// Errors raised while evaluating a template. Value operations deep in filters and operators do
// not know where in the template they run, so they throw TemplateError; the interpreter turns it
// into a macserve::Error that names the line and column of the expression being evaluated.
#pragma once

#include <exception>
#include <string>
#include <utility>

#include <fmt/format.h>

namespace macserve::chat {

// The Python exception class Jinja would raise; it prefixes the message like Python does.
enum class ErrorKind {
  kTypeError,
  kValueError,
  kUndefinedError,
  kZeroDivisionError,
  kOverflowError,
  kSecurityError,
  kRuntimeError,
  kRaised,  // raise_exception(msg) from the template: the message is shown as is
  kLimit,   // a resource limit of this renderer (output size, steps, depth)
};

const char* to_string(ErrorKind kind);

class TemplateError : public std::exception {
 public:
  TemplateError(ErrorKind kind, std::string message) : kind_(kind), message_(std::move(message)) {}
  ErrorKind kind() const { return kind_; }
  const char* what() const noexcept override { return message_.c_str(); }

 private:
  ErrorKind kind_;
  std::string message_;
};

template <typename... Args>
[[noreturn]] void raise(ErrorKind kind, fmt::format_string<Args...> f, Args&&... args) {
  throw TemplateError(kind, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace macserve::chat
