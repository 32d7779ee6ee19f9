// Internal: a GenerateRequest -> engine::Request with the checks HTTP uses (request_fields.h),
// engine outputs -> GenerateResponse messages, and ApiError -> gRPC status code numbers. No gRPC
// headers (only the generated messages), so it is cheap to compile and to test.
#pragma once

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "macserve/openai/protocol.h"
#include "macserve/request/request.h"
#include "macserve/v1/generate.pb.h"

namespace macserve::grpc_server {

struct MappedRequest {
  engine::Request request;  // id left empty
  bool stream = true;
  bool logprobs = false;
  int32_t top_logprobs = 0;
};

// Every problem is an ApiError naming the field (400, or 404/503 as HTTP answers them).
std::variant<MappedRequest, openai::ApiError> map_request(const macserve::v1::GenerateRequest& req,
                                                          const openai::ServedModel& model);

// The gRPC status code (grpc::StatusCode value) for an ApiError's HTTP status.
int status_code_for(const openai::ApiError& e);

// Builds the messages of one call from its engine outputs (non-error outputs only).
class OutputAssembler {
 public:
  OutputAssembler(const MappedRequest& mapped, std::string request_id);
  // One poll's outputs, in order. Streaming: one Chunk per completion with new tokens (outputs of
  // the same completion merged), then its Complete once finished. Not streaming: a Complete with
  // the whole completion once it finished.
  void add(const std::vector<engine::RequestOutput>& outs,
           std::vector<macserve::v1::GenerateResponse>* messages);

 private:
  void append(const engine::RequestOutput& out, macserve::v1::Chunk* chunk) const;
  void complete(const engine::RequestOutput& out, macserve::v1::Complete* c) const;

  bool stream_, logprobs_;
  int32_t top_logprobs_;
  std::string request_id_;
  std::vector<macserve::v1::Chunk> whole_;  // not streaming: [index] everything so far
};

}  // namespace macserve::grpc_server
