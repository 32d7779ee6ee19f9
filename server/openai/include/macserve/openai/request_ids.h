// Request ids and API keys as every front end (HTTP, gRPC) takes them.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace macserve::openai {

// `bytes` random bytes as lowercase hex (request and completion ids).
std::string random_hex(std::size_t bytes);
// Client-given request ids we take as they are: 1-256 of [A-Za-z0-9-_.:] (they reach logs and
// the Abort registry); anything else is replaced by a random id.
bool usable_request_id(std::string_view id);
// Length-independent comparison of a presented API key with the configured one.
bool constant_time_equal(std::string_view a, std::string_view b);

}  // namespace macserve::openai
