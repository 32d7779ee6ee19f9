// Fuzz target: OpenAI request bodies are untrusted bytes. The first byte picks the endpoint
// ('c' chat, 'p' completions, 't' /tokenize, 'd' /detokenize, any other byte: its value mod 4),
// the rest is the body. A body is prepared, then synthetic engine outputs (text taken from the
// input, so often invalid UTF-8) go through the ResponseBuilder, streaming or not.
// Invariants, checked with abort() so the fuzzer reports them: prepare() never fails with 500
// (an unexpected exception), prepared requests pass SamplingParams::validate(), fit the context
// and name vocabulary ids only; every error envelope, response and chunk is valid JSON.
// env: MACSERVE_SHARED_DIR locates ../shared (tiny-qwen2-bpe and its chat template); without it a
// byte tokenizer and a ChatML template stand in.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "macserve/core/error.h"
#include "macserve/openai/protocol.h"
#include "unit/byte_tokenizer.h"

namespace {

using namespace macserve;

struct Fixture {
  std::unique_ptr<tokenizer::Tokenizer> tok;
  std::unique_ptr<chat::ChatTemplate> tmpl;
  openai::ServedModel model;
};

const Fixture& fixture() {
  static const Fixture f = [] {
    Fixture x;
    const char* shared = std::getenv("MACSERVE_SHARED_DIR");
    const std::string dir = shared != nullptr ? std::string(shared) + "/models/tiny-qwen2-bpe" : "";
    if (!dir.empty() && std::filesystem::exists(dir + "/tokenizer.json"))
      x.tok = tokenizer::load_tokenizer(dir);
    else
      x.tok = std::make_unique<testing_support::ByteTokenizer>();
    const std::string source =
        !x.tok->chat_template().empty()
            ? x.tok->chat_template()
            : "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
              "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    x.tmpl = std::make_unique<chat::ChatTemplate>(chat::ChatTemplate::parse(source));
    x.model.name = "tiny";
    x.model.tokenizer = x.tok.get();
    x.model.chat_template = x.tmpl.get();
    x.model.eos_token = "<|im_end|>";
    x.model.max_model_len = 256;
    x.model.created = 1;
    return x;
  }();
  return f;
}

[[noreturn]] void fail(const char* what, std::string_view detail = {}) {
  std::fprintf(stderr, "openai_request_fuzz: %s %.*s\n", what, static_cast<int>(detail.size()),
               detail.data());
  std::abort();
}

void require_json(const std::string& text, const char* what) {
  if (!nlohmann::json::accept(text)) fail(what, text);
}

void check_error(const openai::ApiError& e) {
  if (e.status != 400 && e.status != 404) fail("unexpected status", e.to_json());
  require_json(e.to_json(), "error envelope is not JSON");
}

void check_prepared(const openai::Prepared& p, const Fixture& f) {
  if (p.requests.empty() || p.requests.size() != p.prompt_texts.size())
    fail("request/prompt count");
  if (p.n < 1 || p.n > 128) fail("n out of range");
  for (const auto& r : p.requests) {
    try {
      r.params.validate();
    } catch (const Error& e) {
      fail("prepared params rejected by validate()", e.what());
    }
    if (r.prompt_ids.empty()) fail("empty prompt");
    for (const int32_t id : r.prompt_ids)
      if (id < 0 || id >= f.tok->vocab_size()) fail("prompt id outside the vocabulary");
    if (static_cast<int64_t>(r.prompt_ids.size()) + r.params.max_tokens > f.model.max_model_len)
      fail("prompt + max_tokens over the context");
    if (r.n != p.n) fail("request n differs");
  }
}

// Two outputs per choice (the last one final), text and ids taken from the input bytes.
void build_responses(const openai::Prepared& p, const Fixture& f, std::string_view bytes) {
  openai::ResponseBuilder b(p, f.model, "fuzz", 1);
  std::vector<std::string> chunks;
  const std::size_t max_requests = 4;
  for (std::size_t r = 0; r < p.requests.size() && r < max_requests; ++r) {
    for (int32_t i = 0; i < p.n && i < 4; ++i) {
      for (int step = 0; step < 2; ++step) {
        engine::RequestOutput o;
        o.index = i;
        o.text = std::string(bytes.substr(0, std::min<std::size_t>(bytes.size(), 7 + step)));
        const int32_t id =
            bytes.empty() ? 0 : static_cast<unsigned char>(bytes[step % bytes.size()]);
        o.tokens.push_back(
            {id, step == 0 ? -0.25f : -1e30f, {{id, -0.25f}, {id + 1, -2.0f}, {-5, -3.0f}}});
        o.finished = step == 1;
        o.finish_reason = step == 1 ? static_cast<engine::FinishReason>(1 + (id % 3))
                                    : engine::FinishReason::kNone;
        o.completion_tokens = step + 1;
        b.add(r, o, p.stream ? &chunks : nullptr);
      }
    }
  }
  b.finish_stream(&chunks);
  for (const auto& c : chunks) require_json(c, "chunk is not JSON");
  if (!p.stream) require_json(b.response(), "response is not JSON");
  if (b.prompt_tokens() < 0 || b.completion_tokens() < 0) fail("negative usage");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const Fixture& f = fixture();
  const std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);
  int which = data[0] == 'c'   ? 0
              : data[0] == 'p' ? 1
              : data[0] == 't' ? 2
              : data[0] == 'd' ? 3
                               : data[0] % 4;
  if (which >= 2) {
    const auto r = which == 2 ? openai::tokenize(body, f.model) : openai::detokenize(body, f.model);
    if (const auto* e = std::get_if<openai::ApiError>(&r))
      check_error(*e);
    else
      require_json(std::get<std::string>(r), "tokenize output is not JSON");
    return 0;
  }
  const auto endpoint =
      which == 0 ? openai::Endpoint::kChatCompletions : openai::Endpoint::kCompletions;
  const auto r = openai::prepare(endpoint, body, f.model);
  if (const auto* e = std::get_if<openai::ApiError>(&r)) {
    check_error(*e);
    return 0;
  }
  const auto& p = std::get<openai::Prepared>(r);
  check_prepared(p, f);
  build_responses(p, f, body);
  return 0;
}
