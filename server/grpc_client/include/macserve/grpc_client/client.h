// GrpcClient: a blocking client of macserve's gRPC API (service macserve.v1.Generation).
// Independent of the server and the engine; the messages are the generated ones of
// proto/macserve/v1/generate.proto. gRPC headers stay in client.cc.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "macserve/v1/generate.pb.h"

namespace macserve::grpc_client {

struct ClientOptions {
  std::string target = "127.0.0.1:50051";  // host:port (any gRPC target string)
  std::string api_key;                     // sent as `authorization: Bearer <key>` when set
  int64_t max_message_bytes = int64_t{64} << 20;
};

// A call's outcome: a gRPC status code (0 = OK, grpc::StatusCode values) and its message.
struct CallStatus {
  int code = 0;
  std::string message;
  bool ok() const { return code == 0; }
  std::string to_string() const;  // "OK" or "INVALID_ARGUMENT: message"
};

// Called for every message of a Generate call, on the calling thread, as it arrives. Return false
// to cancel the call (the server then aborts the request; the call ends CANCELLED).
using ResponseCallback = std::function<bool(const macserve::v1::GenerateResponse&)>;

class GrpcClient {
 public:
  explicit GrpcClient(ClientOptions options);
  ~GrpcClient();
  GrpcClient(const GrpcClient&) = delete;
  GrpcClient& operator=(const GrpcClient&) = delete;

  // Waits until the channel is connected; false when it is not within timeout_seconds.
  bool wait_ready(double timeout_seconds);

  // Runs one Generate call to its end. timeout_seconds > 0 sets the call's deadline.
  // Thread-safe: one client serves any number of concurrent calls (one HTTP/2 connection).
  CallStatus generate(const macserve::v1::GenerateRequest& request,
                      const ResponseCallback& on_response, double timeout_seconds = 0.0);
  CallStatus abort(const std::vector<std::string>& request_ids, int32_t* num_aborted = nullptr);
  CallStatus get_model_info(macserve::v1::GetModelInfoResponse* out);
  CallStatus get_server_info(macserve::v1::GetServerInfoResponse* out);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The status code's name ("OK", "CANCELLED", "INVALID_ARGUMENT", ...).
const char* status_code_name(int code);

}  // namespace macserve::grpc_client
