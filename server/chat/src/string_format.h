// Python's two string formatting mini-languages: `"%s and %d" % (a, b)` (printf style, also the
// `format` filter) and `"{} and {name}".format(a, name=b)`. The common conversions and specs are
// supported; anything else is a ValueError rather than a silently different result.
#pragma once

#include <string>

#include "value.h"

namespace macserve::chat {

std::string percent_format(Interpreter& interp, const std::string& format, const Value& args);
std::string brace_format(Interpreter& interp, const std::string& format, const Arguments& args);
// Python's format(value, spec) for a replacement field's spec; widths past max_bytes are refused.
std::string format_with_spec(const Value& value, const std::string& spec, size_t max_bytes);

}  // namespace macserve::chat
