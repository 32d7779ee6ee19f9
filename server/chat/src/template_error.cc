#include "template_error.h"

namespace macserve::chat {

const char* to_string(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kTypeError:
      return "TypeError";
    case ErrorKind::kValueError:
      return "ValueError";
    case ErrorKind::kUndefinedError:
      return "UndefinedError";
    case ErrorKind::kZeroDivisionError:
      return "ZeroDivisionError";
    case ErrorKind::kOverflowError:
      return "OverflowError";
    case ErrorKind::kSecurityError:
      return "SecurityError";
    case ErrorKind::kRuntimeError:
      return "TemplateRuntimeError";
    case ErrorKind::kRaised:
      return "TemplateError";
    case ErrorKind::kLimit:
      return "LimitError";
  }
  return "Error";
}

}  // namespace macserve::chat
