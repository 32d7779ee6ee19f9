// GrpcClient (server/grpc_client) against the real server: one `macserve serve` process on the
// tiny model with gRPC on a free port, started once for the suite and stopped with SIGTERM.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "macserve/grpc_client/client.h"
#include "test_paths.h"

extern char** environ;

namespace macserve::grpc_client {
namespace {

namespace v1 = macserve::v1;
using Clock = std::chrono::steady_clock;

constexpr int kOk = 0, kCancelled = 1, kInvalidArgument = 3, kDeadlineExceeded = 4,
              kUnavailable = 14;

class GrpcClientTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = macserve::testing::models_dir() + "/tiny-qwen2-bpe";
    const char* bin_env = std::getenv("MACSERVE_BIN");
    const std::string bin =
        bin_env != nullptr ? bin_env : std::string(MACSERVE_BINARY_DIR) + "/bin/macserve";
    if (!std::filesystem::exists(model_ + "/model.safetensors") || !std::filesystem::exists(bin))
      return;
    dir_ = std::filesystem::temp_directory_path() /
           ("macserve-grpc-client-" + std::to_string(getpid()));
    std::filesystem::create_directories(dir_);
    const std::string port_file = (dir_ / "grpc_port").string();
    std::vector<std::string> args = {bin,
                                     "serve",
                                     "--model",
                                     model_,
                                     "--host",
                                     "127.0.0.1",
                                     "--port",
                                     "0",
                                     "--grpc-port",
                                     "0",
                                     "--grpc-port-file",
                                     port_file,
                                     "--max-model-len",
                                     "512",
                                     "--kv-cache-tokens",
                                     "8192",
                                     "--disable-access-log"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    const std::string log = (dir_ / "server.log").string();
    posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    ASSERT_EQ(posix_spawn(&pid_, bin.c_str(), &fa, nullptr, argv.data(), environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    // The port file appears once gRPC listens; GetModelInfo answers once the model is loaded.
    const auto deadline = Clock::now() + std::chrono::seconds(120);
    int port = 0;
    while (Clock::now() < deadline && port == 0) {
      std::ifstream f(port_file);
      if (!(f >> port)) port = 0;
      if (port == 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ASSERT_GT(port, 0) << "no gRPC port file; see " << log;
    target_ = "127.0.0.1:" + std::to_string(port);
    GrpcClient probe(options(target_));
    v1::GetModelInfoResponse info;
    while (Clock::now() < deadline && !probe.get_model_info(&info).ok())
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ASSERT_EQ(info.name(), "tiny-qwen2-bpe") << "server not ready; see " << log;
  }

  static void TearDownTestSuite() {
    if (pid_ <= 0) return;
    kill(pid_, SIGTERM);
    int status = 0;
    waitpid(pid_, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "server exit status " << status;
    std::filesystem::remove_all(dir_);
    pid_ = 0;
  }

  void SetUp() override {
    if (target_.empty())
      GTEST_SKIP()
          << "tiny model or macserve binary not found (set MACSERVE_SHARED_DIR / MACSERVE_BIN)";
  }

  static ClientOptions options(const std::string& target) {
    ClientOptions o;
    o.target = target;
    return o;
  }

  static v1::GenerateRequest greedy(const std::string& text, int max_tokens) {
    v1::GenerateRequest r;
    r.set_text(text);
    r.mutable_sampling()->set_temperature(0.0f);
    r.mutable_sampling()->set_max_tokens(max_tokens);
    r.mutable_sampling()->set_ignore_eos(true);
    return r;
  }

  static inline pid_t pid_ = 0;
  static inline std::string model_, target_;
  static inline std::filesystem::path dir_;
};

TEST_F(GrpcClientTest, ModelAndServerInfo) {
  GrpcClient c(options(target_));
  v1::GetModelInfoResponse m;
  ASSERT_TRUE(c.get_model_info(&m).ok());
  EXPECT_EQ(m.architecture(), "Qwen2ForCausalLM");
  EXPECT_EQ(m.max_context(), 512);
  EXPECT_TRUE(m.has_chat_template());
  v1::GetServerInfoResponse s;
  ASSERT_TRUE(c.get_server_info(&s).ok());
  EXPECT_EQ(s.device(), "cpu");
  EXPECT_GT(s.kv_capacity_tokens(), 0);
  EXPECT_FALSE(s.version().empty());
}

TEST_F(GrpcClientTest, StreamsChunksThenCompleteAndEqualsUnary) {
  GrpcClient c(options(target_));
  std::vector<int32_t> streamed;
  int chunks = 0, completes = 0;
  const CallStatus st = c.generate(
      greedy("It is a truth universally acknowledged", 10), [&](const v1::GenerateResponse& r) {
        if (r.has_chunk()) {
          EXPECT_EQ(completes, 0) << "a chunk after the Complete";
          ++chunks;
          streamed.insert(streamed.end(), r.chunk().token_ids().begin(),
                          r.chunk().token_ids().end());
        } else {
          ++completes;
          EXPECT_EQ(r.complete().finish_reason(), v1::FINISH_REASON_LENGTH);
          EXPECT_EQ(r.complete().completion_tokens(), 10);
        }
        return true;
      });
  ASSERT_TRUE(st.ok()) << st.to_string();
  EXPECT_EQ(streamed.size(), 10u);
  EXPECT_GE(chunks, 2);
  EXPECT_EQ(completes, 1);

  auto unary = greedy("It is a truth universally acknowledged", 10);
  unary.set_stream(false);
  std::vector<int32_t> whole;
  ASSERT_TRUE(c.generate(unary, [&](const v1::GenerateResponse& r) {
                 EXPECT_TRUE(r.has_complete());
                 whole.assign(r.complete().token_ids().begin(), r.complete().token_ids().end());
                 return true;
               }).ok());
  EXPECT_EQ(whole, streamed);
}

TEST_F(GrpcClientTest, InvalidArgumentNamesTheField) {
  GrpcClient c(options(target_));
  auto r = greedy("x", 4);
  r.mutable_sampling()->set_temperature(5.0f);
  const CallStatus st = c.generate(r, nullptr);
  EXPECT_EQ(st.code, kInvalidArgument) << st.to_string();
  EXPECT_NE(st.message.find("temperature"), std::string::npos) << st.message;
  EXPECT_EQ(std::string(status_code_name(st.code)), "INVALID_ARGUMENT");
}

TEST_F(GrpcClientTest, CancelFromTheCallbackAndDeadlineFreeTheEngine) {
  GrpcClient c(options(target_));
  int seen = 0;
  const CallStatus st =
      c.generate(greedy("Once upon a time", 400), [&](const v1::GenerateResponse&) {
        return ++seen < 1;  // cancel after the first message
      });
  EXPECT_EQ(st.code, kCancelled) << st.to_string();
  EXPECT_EQ(seen, 1);
  EXPECT_EQ(c.generate(greedy("Once upon a time", 400), nullptr, 0.3).code, kDeadlineExceeded);
  v1::GetServerInfoResponse s;
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  do {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ASSERT_TRUE(c.get_server_info(&s).ok());
  } while ((s.num_running() > 0 || s.kv_cache_usage() > 0) && Clock::now() < deadline);
  EXPECT_EQ(s.num_running(), 0);
  EXPECT_EQ(s.kv_cache_usage(), 0.0);
}

TEST_F(GrpcClientTest, AbortByRequestId) {
  GrpcClient c(options(target_));
  auto r = greedy("Once upon a time", 400);
  r.set_request_id("client-test-abort");
  v1::Complete complete;
  std::thread t([&] {
    const CallStatus st = c.generate(r, [&](const v1::GenerateResponse& m) {
      if (m.has_complete()) complete = m.complete();
      return true;
    });
    EXPECT_EQ(st.code, kOk) << st.to_string();
  });
  int32_t aborted = 0;
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  while (aborted == 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    ASSERT_TRUE(c.abort({"client-test-abort"}, &aborted).ok());
  }
  t.join();
  EXPECT_EQ(aborted, 1);
  EXPECT_EQ(complete.finish_reason(), v1::FINISH_REASON_ABORT);
  EXPECT_LT(complete.completion_tokens(), 400);
}

TEST_F(GrpcClientTest, UnreachableServerIsUnavailable) {
  GrpcClient c(options("127.0.0.1:1"));
  EXPECT_FALSE(c.wait_ready(0.2));
  v1::GetModelInfoResponse m;
  EXPECT_EQ(c.get_model_info(&m).code, kUnavailable);
}

}  // namespace
}  // namespace macserve::grpc_client
