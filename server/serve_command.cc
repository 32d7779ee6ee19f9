#include "serve_command.h"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include <spdlog/spdlog.h>

#include "default_model.h"
#include "engine_options.h"
#include "macserve/core/error.h"
#include "macserve/engine/engine.h"
#include "macserve/grpc/server.h"
#include "macserve/http/server.h"
#include "macserve/metrics/metrics.h"
#include "text_util.h"

#ifndef MACSERVE_VERSION
#define MACSERVE_VERSION "0.0.0"
#endif

namespace macserve::server {
namespace {

struct ServeOptions {
  engine::EngineConfig engine;
  http::HttpOptions http;
  grpc_server::GrpcOptions grpc;
  std::string grpc_host;  // default: --host
  std::string grpc_port_file;
  bool no_grpc = false;
  std::string served_model_name;
  std::string api_key_file;
  std::string chat_template_file;
  std::string port_file;
  std::string config_file;  // expanded into flags before parsing (config_file.h)
  int64_t max_output_tokens = 0;
  std::string cors;
  bool disable_access_log = false;
};

std::string read_text_file(const std::string& path, const char* what) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw_error(ErrorCode::kInvalidArgument, "cannot read {} {}", what, path);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The "model" name clients use: --served-model-name, else the model file or directory name.
std::string served_name(const ServeOptions& o) {
  if (!o.served_model_name.empty()) return o.served_model_name;
  std::filesystem::path p(o.engine.model_path);
  if (p.filename().empty()) p = p.parent_path();
  std::string name = p.filename().string();
  if (p.extension() == ".gguf") name = p.stem().string();
  return name.empty() ? "macserve" : name;
}

// What GetServerInfo reports about the engine configuration (the one place the gRPC front end
// reads EngineConfig).
grpc_server::EngineInfo engine_info(const engine::EngineConfig& c) {
  grpc_server::EngineInfo info;
  info.max_num_seqs = c.max_num_seqs;
  info.max_num_batched_tokens = c.max_num_batched_tokens;
  info.max_queued_requests = c.max_queued_requests;
  info.block_size = c.block_size;
  info.prefix_caching = c.enable_prefix_caching;
  info.attention = engine::to_string(c.attention);
  info.mac_threshold = c.mac_threshold;
  info.mac_window = c.mac_window;
  info.mac_band = c.mac_band;
  info.mac_min_context = c.mac_min_context;
  return info;
}

void write_port_file(const std::string& path, int port) {
  if (path.empty()) return;
  std::ofstream f(path);
  f << port << "\n";
}

int run_serve(ServeOptions& o, const Environment& env) {
  if (o.engine.model_path.empty()) o.engine.model_path = resolve_default_model(env);
  apply_environment(env, o.engine);
  if (!o.api_key_file.empty()) {
    if (!o.http.api_key.empty())
      throw_error(ErrorCode::kInvalidArgument, "give --api-key or --api-key-file, not both");
    o.http.api_key = trim(read_text_file(o.api_key_file, "--api-key-file"));
    if (o.http.api_key.empty())
      throw_error(ErrorCode::kInvalidArgument, "--api-key-file {} is empty", o.api_key_file);
  }
  std::string tmpl_source;
  if (!o.chat_template_file.empty())
    tmpl_source = read_text_file(o.chat_template_file, "--chat-template");
  for (std::size_t start = 0; start <= o.cors.size() && !o.cors.empty();) {
    const std::size_t comma = std::min(o.cors.find(',', start), o.cors.size());
    if (auto origin = trim(o.cors.substr(start, comma - start)); !origin.empty())
      o.http.cors_origins.push_back(origin);
    start = comma + 1;
  }
  o.http.access_log = !o.disable_access_log;

  http::ServeState state;
  state.options = o.http;
  state.version = MACSERVE_VERSION;
  const std::string name = served_name(o);
  metrics::ServerMetrics metrics(name);
  state.metrics = &metrics;

  // The gRPC front end shares the engine, the model, the drain flag and the in-flight count.
  grpc_server::GrpcServeState grpc_state;
  grpc_state.options = o.grpc;
  grpc_state.options.host = o.grpc_host.empty() ? o.http.host : o.grpc_host;
  grpc_state.options.api_key = o.http.api_key;
  grpc_state.options.access_log = o.http.access_log;
  grpc_state.engine_info = engine_info(o.engine);
  grpc_state.version = MACSERVE_VERSION;
  grpc_state.metrics = &metrics;
  grpc_state.model = &state.model;
  grpc_state.engine = &state.engine;
  grpc_state.draining = &state.draining;
  grpc_state.active_generations = &state.active_generations;

  // Listen first so that /health answers 503 (gRPC health NOT_SERVING) while the model loads.
  http::HttpServer server(state);
  spdlog::info("listening on http://{}:{} (model loading)", o.http.host, server.port());
  write_port_file(o.port_file, server.port());
  std::unique_ptr<grpc_server::GrpcServer> grpc;
  if (!o.no_grpc) {
    try {
      grpc = std::make_unique<grpc_server::GrpcServer>(grpc_state);
    } catch (...) {
      server.stop();
      throw;
    }
    spdlog::info("listening on grpc://{}:{} (model loading)", grpc_state.options.host,
                 grpc->port());
    write_port_file(o.grpc_port_file, grpc->port());
    state.on_drain = [g = grpc.get()] { g->set_serving(false); };
  }

  std::unique_ptr<engine::Engine> eng;
  try {
    eng = engine::Engine::create(o.engine);
  } catch (...) {
    if (grpc) grpc->stop(0.0);
    server.stop();
    throw;
  }
  const auto& tok = eng->tokenizer();
  if (tmpl_source.empty()) tmpl_source = tok.chat_template();
  std::unique_ptr<chat::ChatTemplate> tmpl;
  if (!tmpl_source.empty()) {
    try {
      tmpl = std::make_unique<chat::ChatTemplate>(chat::ChatTemplate::parse(tmpl_source));
    } catch (const Error& e) {
      if (!o.chat_template_file.empty()) {
        eng->shutdown();
        if (grpc) grpc->stop(0.0);
        server.stop();
        throw_error(ErrorCode::kInvalidArgument, "--chat-template {}: {}", o.chat_template_file,
                    e.what());
      }
      spdlog::warn(
          "the model's chat template cannot be used ({}); /v1/chat/completions will answer 400",
          e.what());
    }
  } else {
    spdlog::warn(
        "the model has no chat template; /v1/chat/completions will answer 400 (see "
        "--chat-template)");
  }
  state.model.name = name;
  state.model.tokenizer = &tok;
  state.model.chat_template = tmpl.get();
  state.model.bos_token = tok.bos_id() >= 0 ? tok.id_to_piece(tok.bos_id()) : "";
  state.model.eos_token = tok.eos_id() >= 0 ? tok.id_to_piece(tok.eos_id()) : "";
  state.model.max_model_len = eng->max_model_len();
  state.model.max_output_tokens = o.max_output_tokens;
  state.model.created = static_cast<int64_t>(std::time(nullptr));
  state.engine.store(eng.get(), std::memory_order_release);
  if (grpc && !state.draining.load()) grpc->set_serving(true);
  spdlog::info(
      "ready: model '{}' on {}, context {}, attention {}{}, chat template {}, auth {}, "
      "http://{}:{}{}",
      name, eng->device_name(), eng->max_model_len(), engine::to_string(o.engine.attention),
      o.engine.attention == engine::AttentionMode::kMac
          ? fmt::format(" (t {}, window {}, band {}, min context {})", o.engine.mac_threshold,
                        o.engine.mac_window, o.engine.mac_band, o.engine.mac_min_context)
          : "",
      tmpl ? (o.chat_template_file.empty() ? "from the model" : o.chat_template_file) : "none",
      o.http.api_key.empty() ? "off" : "on", o.http.host, server.port(),
      grpc ? fmt::format(", grpc://{}:{}", grpc_state.options.host, grpc->port()) : "");

  // Waits for generations of both front ends (the gRPC calls count in state.active_generations).
  server.wait_and_drain();
  state.engine.store(nullptr, std::memory_order_release);  // new requests: 503 / UNAVAILABLE
  eng->shutdown();  // what still runs finishes with reason abort
  if (grpc) grpc->stop(1.0);
  server.stop();
  spdlog::info("stopped");
  return 0;
}

}  // namespace

void add_serve_command(CLI::App& app, const Environment& env, int& exit_code) {
  auto o = std::make_shared<ServeOptions>();
  CLI::App* cmd = app.add_subcommand("serve", "OpenAI-compatible HTTP server and gRPC server");
  // A flag given twice (config file, then command line) takes the last value.
  cmd->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  cmd->add_option(
      "--config", o->config_file,
      "Config file of `flag-name = value` lines (TOML/INI); command-line flags and MACSERVE_* "
      "environment variables override it");
  cmd->add_option("--host", o->http.host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", o->http.port, "Port (0: any free port)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  cmd->add_option("--port-file", o->port_file, "Write the port listened on to this file");
  cmd->add_option("--served-model-name", o->served_model_name,
                  "Model name clients use (default: the model's file name)");
  cmd->add_option("--api-key", o->http.api_key,
                  "Require Authorization: Bearer <key> on /v1 routes");
  cmd->add_option("--api-key-file", o->api_key_file, "Read the API key from this file");
  cmd->add_option("--chat-template", o->chat_template_file,
                  "Jinja chat template file (overrides the model's)");
  cmd->add_option("--max-output-tokens", o->max_output_tokens,
                  "Cap on max_tokens per request (0: the context)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30));
  cmd->add_option("--http-threads", o->http.threads, "HTTP I/O threads")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  cmd->add_option("--max-body-bytes", o->http.max_body_bytes, "Largest request body")
      ->check(CLI::Range(int64_t{1024}, int64_t{1} << 32))
      ->capture_default_str();
  cmd->add_option("--max-header-bytes", o->http.max_header_bytes, "Largest request header block")
      ->check(CLI::Range(int64_t{512}, int64_t{1} << 24))
      ->capture_default_str();
  cmd->add_option("--request-timeout", o->http.request_timeout,
                  "Seconds to receive a whole request")
      ->check(CLI::Range(0.1, 86400.0))
      ->capture_default_str();
  cmd->add_option("--write-timeout", o->http.write_timeout, "Seconds one response write may take")
      ->check(CLI::Range(0.1, 86400.0))
      ->capture_default_str();
  cmd->add_option("--keep-alive-timeout", o->http.keep_alive_timeout,
                  "Idle seconds before a connection closes")
      ->check(CLI::Range(0.1, 86400.0))
      ->capture_default_str();
  cmd->add_option("--max-connections", o->http.max_connections,
                  "Open connections beyond which new ones get 503")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20))
      ->capture_default_str();
  cmd->add_option("--cors-allowed-origins", o->cors,
                  "Comma-separated Origins allowed by CORS ('*': any; empty: off)");
  cmd->add_option("--drain-timeout", o->http.drain_timeout,
                  "SIGTERM: seconds running requests get to finish")
      ->check(CLI::Range(0.0, 86400.0))
      ->capture_default_str();
  cmd->add_option("--health-stall-timeout", o->http.health_stall_timeout,
                  "/health fails when the engine loop makes no progress for this many seconds")
      ->check(CLI::Range(0.1, 86400.0))
      ->capture_default_str();
  cmd->add_flag("--disable-access-log", o->disable_access_log, "No log line per request");
  cmd->add_option("--grpc-port", o->grpc.port, "gRPC port (0: any free port)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  cmd->add_option("--grpc-host", o->grpc_host, "Address gRPC listens on (default: --host)");
  cmd->add_option("--grpc-port-file", o->grpc_port_file,
                  "Write the gRPC port listened on to this file");
  cmd->add_flag("--no-grpc", o->no_grpc, "Serve HTTP only");
  cmd->add_option("--grpc-max-message-bytes", o->grpc.max_message_bytes,
                  "Largest gRPC message received or sent")
      ->check(CLI::Range(int64_t{1024}, int64_t{INT32_MAX}))
      ->capture_default_str();
  cmd->add_option("--grpc-keepalive-time", o->grpc.keepalive_time,
                  "Seconds between keepalive pings on idle gRPC connections (0: none)")
      ->check(CLI::Range(0.0, 86400.0))
      ->capture_default_str();
  cmd->add_option("--grpc-keepalive-timeout", o->grpc.keepalive_timeout,
                  "Seconds a keepalive ping may go unanswered before the connection closes")
      ->check(CLI::Range(0.1, 86400.0))
      ->capture_default_str();
  cmd->add_option("--grpc-min-ping-interval", o->grpc.min_ping_interval,
                  "Clients pinging more often than this (seconds) are disconnected")
      ->check(CLI::Range(0.0, 86400.0))
      ->capture_default_str();
  add_engine_options(*cmd, o->engine);
  // Every flag can also come from the environment: --max-num-seqs -> MACSERVE_MAX_NUM_SEQS.
  for (CLI::Option* opt :
       cmd->get_options([](const CLI::Option* p) { return !p->get_lnames().empty(); })) {
    if (opt->get_lnames().front() == "config" || opt->get_lnames().front() == "help") continue;
    std::string env = "MACSERVE_" + opt->get_lnames().front();
    std::replace(env.begin(), env.end(), '-', '_');
    std::transform(env.begin(), env.end(), env.begin(),
                   [](unsigned char c) { return std::toupper(c); });
    opt->envname(env);
  }
  cmd->callback([o, &env, &exit_code] { exit_code = run_serve(*o, env); });
}

}  // namespace macserve::server
