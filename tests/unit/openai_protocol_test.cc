// The OpenAI protocol library: request bodies -> engine requests (field mapping, validation with
// OpenAI's status/param/code), chat rendering against the transformers fixtures, response and
// chunk JSON shapes from synthetic engine outputs, tokenize/detokenize and error mapping.
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "macserve/openai/protocol.h"
#include "macserve/openai/request_fields.h"
#include "macserve/scheduler/sequence.h"
#include "test_paths.h"

namespace macserve::openai {
namespace {

using Json = nlohmann::json;
using OJson = nlohmann::ordered_json;

class OpenAiProtocolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string dir = testing::models_dir() + "/tiny-qwen2-bpe";
    MACSERVE_REQUIRE_PATH(dir + "/tokenizer.json");
    tok_ = tokenizer::load_tokenizer(dir);
    tmpl_ = std::make_unique<chat::ChatTemplate>(chat::ChatTemplate::parse(tok_->chat_template()));
    model_.name = "tiny";
    model_.tokenizer = tok_.get();
    model_.chat_template = tmpl_.get();
    model_.eos_token = "<|im_end|>";
    model_.max_model_len = 128;
    model_.created = 1700000000;
  }

  Prepared ok(Endpoint e, const std::string& body) {
    auto r = prepare(e, body, model_);
    if (auto* err = std::get_if<ApiError>(&r)) {
      ADD_FAILURE() << "unexpected error for " << body << ": " << err->to_json();
      return {};
    }
    return std::get<Prepared>(std::move(r));
  }
  ApiError err(Endpoint e, const std::string& body) {
    auto r = prepare(e, body, model_);
    if (auto* p = std::get_if<ApiError>(&r)) return *p;
    ADD_FAILURE() << "expected an error for " << body;
    return {};
  }
  Prepared completion(const std::string& body) { return ok(Endpoint::kCompletions, body); }
  Prepared chat(const std::string& body) { return ok(Endpoint::kChatCompletions, body); }

  std::unique_ptr<tokenizer::Tokenizer> tok_;
  std::unique_ptr<chat::ChatTemplate> tmpl_;
  ServedModel model_;
};

constexpr auto kChat = Endpoint::kChatCompletions;
constexpr auto kCompl = Endpoint::kCompletions;

// ---- field mapping ------------------------------------------------------------------------

TEST_F(OpenAiProtocolTest, CompletionFieldsMapIntoSamplingParams) {
  const Prepared p = completion(R"({"model": "tiny", "prompt": "Hello world", "max_tokens": 7,
    "temperature": 0.5, "top_p": 0.9, "n": 3, "stop": ["\n\n", "END"], "seed": 42, "presence_penalty": 0.5,
    "frequency_penalty": -1.5, "logit_bias": {"11": 5, "12": -100}, "logprobs": 2, "stream": true,
    "stream_options": {"include_usage": true}, "user": "u1", "echo": false, "top_k": 20, "min_p": 0.05,
    "repetition_penalty": 1.1, "ignore_eos": true, "min_tokens": 2, "stop_token_ids": [5, 6],
    "skip_special_tokens": false, "some_unknown_field": {"x": 1}})");
  ASSERT_EQ(p.requests.size(), 1u);
  const auto& r = p.requests[0];
  EXPECT_EQ(r.prompt_ids, tok_->encode("Hello world", true));
  EXPECT_EQ(r.n, 3);
  EXPECT_TRUE(r.id.empty());
  const auto& s = r.params;
  EXPECT_EQ(s.max_tokens, 7);
  EXPECT_FLOAT_EQ(s.temperature, 0.5f);
  EXPECT_FLOAT_EQ(s.top_p, 0.9f);
  EXPECT_EQ(s.stop, (std::vector<std::string>{"\n\n", "END"}));
  EXPECT_EQ(s.seed, std::optional<uint64_t>(42));
  EXPECT_FLOAT_EQ(s.presence_penalty, 0.5f);
  EXPECT_FLOAT_EQ(s.frequency_penalty, -1.5f);
  EXPECT_EQ(s.logit_bias, (std::vector<std::pair<int32_t, float>>{{11, 5.0f}, {12, -100.0f}}));
  EXPECT_EQ(s.logprobs, 2);
  EXPECT_EQ(s.top_k, 20);
  EXPECT_FLOAT_EQ(s.min_p, 0.05f);
  EXPECT_FLOAT_EQ(s.repetition_penalty, 1.1f);
  EXPECT_TRUE(s.ignore_eos);
  EXPECT_EQ(s.min_tokens, 2);
  EXPECT_EQ(s.stop_token_ids, (std::vector<int32_t>{5, 6}));
  EXPECT_FALSE(s.skip_special_tokens);
  EXPECT_EQ(p.n, 3);
  EXPECT_TRUE(p.stream);
  EXPECT_TRUE(p.include_usage);
  EXPECT_TRUE(p.logprobs);
  EXPECT_EQ(p.top_logprobs, 2);
  EXPECT_EQ(p.model, "tiny");
  EXPECT_EQ(p.endpoint, kCompl);
}

TEST_F(OpenAiProtocolTest, DefaultsMatchOpenAi) {
  const Prepared p = completion(R"({"prompt": "Hi"})");  // model absent: fine
  const auto& s = p.requests[0].params;
  EXPECT_FLOAT_EQ(s.temperature, 1.0f);
  EXPECT_FLOAT_EQ(s.top_p, 1.0f);
  EXPECT_EQ(s.logprobs, -1);
  EXPECT_FALSE(s.seed.has_value());
  EXPECT_TRUE(s.skip_special_tokens);
  EXPECT_TRUE(s.stop.empty());
  EXPECT_FALSE(p.stream || p.include_usage || p.echo || p.logprobs);
  EXPECT_EQ(p.model, "tiny");
  // null means "not given"
  const Prepared q =
      completion(R"({"prompt": "Hi", "temperature": null, "stop": null, "seed": null, "n": null})");
  EXPECT_FLOAT_EQ(q.requests[0].params.temperature, 1.0f);
  EXPECT_EQ(q.n, 1);
  // Duplicate keys: the last one wins (Python's json, so vLLM).
  EXPECT_EQ(completion(R"({"prompt": "Hi", "n": 1, "n": 2})").n, 2);
}

TEST_F(OpenAiProtocolTest, ChatLogprobsAndTopLogprobs) {
  Prepared p = chat(
      R"({"messages": [{"role": "user", "content": "Hi"}], "logprobs": true, "top_logprobs": 5})");
  EXPECT_TRUE(p.logprobs);
  EXPECT_EQ(p.top_logprobs, 5);
  EXPECT_EQ(p.requests[0].params.logprobs, 5);
  p = chat(R"({"messages": [{"role": "user", "content": "Hi"}], "logprobs": true})");
  EXPECT_EQ(p.requests[0].params.logprobs, 0);
  p = chat(R"({"messages": [{"role": "user", "content": "Hi"}], "logprobs": false})");
  EXPECT_EQ(p.requests[0].params.logprobs, -1);
}

TEST_F(OpenAiProtocolTest, NegativeSeedMapsToTwosComplement) {
  EXPECT_EQ(completion(R"({"prompt": "a", "seed": -1})").requests[0].params.seed,
            std::optional<uint64_t>(std::numeric_limits<uint64_t>::max()));
  EXPECT_EQ(completion(R"({"prompt": "a", "seed": 18446744073709551615})").requests[0].params.seed,
            std::optional<uint64_t>(std::numeric_limits<uint64_t>::max()));
  EXPECT_EQ(completion(R"({"prompt": "a", "seed": -9223372036854775808})").requests[0].params.seed,
            std::optional<uint64_t>(uint64_t{1} << 63));
  EXPECT_EQ(completion(R"({"prompt": "a", "seed": 3.0})").requests[0].params.seed,
            std::optional<uint64_t>(3));
}

TEST_F(OpenAiProtocolTest, MaxTokensDefaultsToWhatFits) {
  const Prepared p = completion(R"({"prompt": "Hello world"})");
  const int64_t len = static_cast<int64_t>(p.requests[0].prompt_ids.size());
  EXPECT_EQ(p.requests[0].params.max_tokens, 128 - len);
  model_.max_output_tokens = 10;
  EXPECT_EQ(completion(R"({"prompt": "Hello world"})").requests[0].params.max_tokens, 10);
  EXPECT_EQ(
      completion(R"({"prompt": "Hello world", "max_tokens": 10})").requests[0].params.max_tokens,
      10);
  const ApiError e = err(kCompl, R"({"prompt": "Hello world", "max_tokens": 11})");
  EXPECT_EQ(e.status, 400);
  EXPECT_EQ(e.param, "max_tokens");
  // max_completion_tokens wins over max_tokens.
  model_.max_output_tokens = 0;
  EXPECT_EQ(
      chat(
          R"({"messages": [{"role": "user", "content": "x"}], "max_tokens": 9, "max_completion_tokens": 4})")
          .requests[0]
          .params.max_tokens,
      4);
}

TEST_F(OpenAiProtocolTest, ContextLengthExceededNamesTheNumbers) {
  const std::string words = [] {
    std::string s;
    for (int i = 0; i < 10; ++i) s += " hello";
    return s;
  }();
  const int64_t plen = static_cast<int64_t>(tok_->encode(words, true).size());
  ASSERT_LT(plen, 60);
  ApiError e = err(kCompl, Json{{"prompt", words}, {"max_tokens", 128 - plen + 1}}.dump());
  EXPECT_EQ(e.status, 400);
  EXPECT_EQ(e.code, "context_length_exceeded");
  EXPECT_EQ(e.param, "prompt");
  EXPECT_NE(e.message.find("maximum context length is 128 tokens"), std::string::npos) << e.message;
  EXPECT_NE(
      e.message.find("you requested 129 tokens (" + std::to_string(plen) + " in your prompt; " +
                     std::to_string(128 - plen + 1) + " for the completion)"),
      std::string::npos)
      << e.message;
  EXPECT_EQ(completion(Json{{"prompt", words}, {"max_tokens", 128 - plen}}.dump())
                .requests[0]
                .params.max_tokens,
            128 - plen);

  // Chat: param messages, the chat wording.
  const Json chat_body = {{"messages", {{{"role", "user"}, {"content", words}}}},
                          {"max_tokens", 120}};
  const int64_t clen = static_cast<int64_t>(
      chat(Json{{"messages", chat_body["messages"]}}.dump()).requests[0].prompt_ids.size());
  e = err(kChat, chat_body.dump());
  EXPECT_EQ(e.code, "context_length_exceeded");
  EXPECT_EQ(e.param, "messages");
  EXPECT_NE(e.message.find("you requested " + std::to_string(clen + 120) + " tokens (" +
                           std::to_string(clen) + " in the messages, 120 in the completion)"),
            std::string::npos)
      << e.message;

  // A prompt that fills the context leaves no room even with the default max_tokens.
  model_.max_model_len = plen;
  e = err(kCompl, Json{{"prompt", words}}.dump());
  EXPECT_EQ(e.code, "context_length_exceeded");
  EXPECT_NE(e.message.find("resulted in " + std::to_string(plen) + " tokens"), std::string::npos)
      << e.message;
}

// ---- validation ---------------------------------------------------------------------------

TEST_F(OpenAiProtocolTest, EveryValidationErrorNamesItsParam) {
  const char* U = R"("messages": [{"role": "user", "content": "hi"}])";
  auto c = [&](const std::string& extra) {
    std::string body = "{";
    body += U;
    body += ", ";
    body += extra;
    body += "}";
    return body;
  };
  struct Case {
    Endpoint e;
    std::string body;
    int status;
    std::string param;
    std::string code;
  };
  const std::vector<Case> cases = {
      {kChat, c(R"("model": "gpt-4")"), 404, "model", "model_not_found"},
      {kChat, c(R"("model": 5)"), 400, "model", ""},
      {kChat, c(R"("n": "2")"), 400, "n", ""},
      {kChat, c(R"("n": 2.5)"), 400, "n", ""},
      {kChat, c(R"("n": true)"), 400, "n", ""},
      {kChat, c(R"("n": 0)"), 400, "n", ""},
      {kChat, c(R"("n": 129)"), 400, "n", ""},
      {kChat, c(R"("n": 1e300)"), 400, "n", ""},
      {kChat, c(R"("n": -1e300)"), 400, "n", ""},
      {kChat, c(R"("temperature": "hot")"), 400, "temperature", ""},
      {kChat, c(R"("temperature": -0.1)"), 400, "temperature", ""},
      {kChat, c(R"("temperature": 2.01)"), 400, "temperature", ""},
      {kChat, c(R"("temperature": 1e308)"), 400, "temperature", ""},
      {kChat, c(R"("top_p": 0)"), 400, "top_p", ""},
      {kChat, c(R"("top_p": 1.5)"), 400, "top_p", ""},
      {kChat, c(R"("presence_penalty": 2.5)"), 400, "presence_penalty", ""},
      {kChat, c(R"("frequency_penalty": -3)"), 400, "frequency_penalty", ""},
      {kChat, c(R"("max_tokens": -1)"), 400, "max_tokens", ""},
      {kChat, c(R"("max_tokens": 0)"), 400, "max_tokens", ""},
      {kChat, c(R"("max_tokens": 99999999999999999999)"), 400, "max_tokens", ""},
      {kChat, c(R"("max_completion_tokens": "5")"), 400, "max_completion_tokens", ""},
      {kChat, c(R"("stop": 5)"), 400, "stop", ""},
      {kChat, c(R"("stop": [""])"), 400, "stop", ""},
      {kChat, c(R"("stop": ["a","b","c","d","e","f","g","h","i","j","k","l","m","n","o","p","q"])"),
       400, "stop", ""},
      {kChat, c(R"("seed": 1.5)"), 400, "seed", ""},
      {kChat, c(R"("seed": "1")"), 400, "seed", ""},
      {kChat, c(R"("seed": 1e30)"), 400, "seed", ""},
      {kChat, c(R"("logit_bias": {"abc": 1})"), 400, "logit_bias", ""},
      {kChat, c(R"("logit_bias": {"99999999": 1})"), 400, "logit_bias", ""},
      {kChat, c(R"("logit_bias": {"5": 101})"), 400, "logit_bias", ""},
      {kChat, c(R"("logit_bias": {"5": "x"})"), 400, "logit_bias", ""},
      {kChat, c(R"("logit_bias": [1])"), 400, "logit_bias", ""},
      {kChat, c(R"("logprobs": 1)"), 400, "logprobs", ""},
      {kChat, c(R"("logprobs": true, "top_logprobs": 21)"), 400, "top_logprobs", ""},
      {kChat, c(R"("top_logprobs": 2)"), 400, "top_logprobs", ""},
      {kChat, c(R"("stream_options": {"include_usage": true})"), 400, "stream_options", ""},
      {kChat, c(R"("stream": "yes")"), 400, "stream", ""},
      {kChat, c(R"("user": 5)"), 400, "user", ""},
      {kChat, c(R"("top_k": -2)"), 400, "top_k", ""},
      {kChat, c(R"("min_p": 1.5)"), 400, "min_p", ""},
      {kChat, c(R"("repetition_penalty": 0)"), 400, "repetition_penalty", ""},
      {kChat, c(R"("ignore_eos": 1)"), 400, "ignore_eos", ""},
      {kChat, c(R"("min_tokens": -1)"), 400, "min_tokens", ""},
      {kChat, c(R"("min_tokens": 20, "max_tokens": 10)"), 400, "min_tokens", ""},
      {kChat, c(R"("stop_token_ids": [-1])"), 400, "stop_token_ids", ""},
      {kChat, c(R"("stop_token_ids": [100000000])"), 400, "stop_token_ids", ""},
      {kChat, c(R"("skip_special_tokens": "no")"), 400, "skip_special_tokens", ""},
      {kChat, c(R"("add_generation_prompt": 0)"), 400, "add_generation_prompt", ""},
      {kChat, c(R"("chat_template_kwargs": [1])"), 400, "chat_template_kwargs", ""},
      {kChat, c(R"("response_format": {"type": "json_object"})"), 400, "response_format", ""},
      {kChat, c(R"("tool_choice": "auto")"), 400, "tool_choice", ""},
      {kChat, R"({})", 400, "messages", ""},
      {kChat, R"({"messages": []})", 400, "messages", ""},
      {kChat, R"({"messages": "hi"})", 400, "messages", ""},
      {kChat, R"({"messages": [5]})", 400, "messages[0]", ""},
      {kChat, R"({"messages": [{"content": "hi"}]})", 400, "messages[0].role", ""},
      {kChat, R"({"messages": [{"role": "wizard", "content": "hi"}]})", 400, "messages[0].role",
       ""},
      {kChat, R"({"messages": [{"role": "user"}]})", 400, "messages[0].content", ""},
      {kChat, R"({"messages": [{"role": "user", "content": 5}]})", 400, "messages[0].content", ""},
      {kChat,
       R"({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]})",
       400, "messages[0].content[0].type", ""},
      {kChat, R"({"messages": [{"role": "user", "content": [{"type": "text"}]}]})", 400,
       "messages[0].content[0].text", ""},
      {kCompl, R"({})", 400, "prompt", ""},
      {kCompl, R"({"prompt": []})", 400, "prompt", ""},
      {kCompl, R"({"prompt": ""})", 400, "prompt", ""},
      {kCompl, R"({"prompt": [[]]})", 400, "prompt", ""},
      {kCompl, R"({"prompt": 5})", 400, "prompt", ""},
      {kCompl, R"({"prompt": ["a", 5]})", 400, "prompt", ""},
      {kCompl, R"({"prompt": [1, "a"]})", 400, "prompt[1]", ""},
      {kCompl, R"({"prompt": [1, 99999999]})", 400, "prompt", ""},
      {kCompl, R"({"prompt": [-1]})", 400, "prompt[0]", ""},
      {kCompl, R"({"prompt": [[1], 2]})", 400, "prompt", ""},
      {kCompl, R"({"prompt": "a", "logprobs": 6})", 400, "logprobs", ""},
      {kCompl, R"({"prompt": "a", "logprobs": true})", 400, "logprobs", ""},
      {kCompl, R"({"prompt": "a", "echo": true, "logprobs": 1})", 400, "echo", ""},
      {kCompl, R"({"prompt": "a", "suffix": "z"})", 400, "suffix", ""},
      {kCompl, R"({"prompt": "a", "best_of": 3})", 400, "best_of", ""},
      {kCompl, R"({"prompt": "a", "max_tokens": 1000})", 400, "max_tokens", ""},
      {kCompl, R"([1, 2])", 400, "", ""},
      {kCompl, R"("prompt")", 400, "", ""},
      {kCompl, R"({"prompt": "a",})", 400, "", ""},
      {kCompl, "{\"prompt\": \"\xff\xfe\"}", 400, "", ""},
      {kCompl, "{\"prompt\": \"\\ud800\"}", 400, "", ""},
      {kCompl, R"({"prompt": "a", "temperature": 1e999})", 400, "", ""},
      {kCompl, std::string(10000, '[') + std::string(10000, ']'), 400, "", ""},
      {kCompl, "", 400, "", ""},
  };
  for (const Case& k : cases) {
    SCOPED_TRACE(k.body.substr(0, 200));
    const ApiError e = err(k.e, k.body);
    EXPECT_EQ(e.status, k.status);
    EXPECT_EQ(e.param, k.param) << e.message;
    EXPECT_EQ(e.code, k.code);
    EXPECT_FALSE(e.message.empty());
    if (k.status == 400) {
      EXPECT_EQ(e.type, "invalid_request_error");
    }
    const Json env = Json::parse(e.to_json());  // the envelope is valid JSON
    EXPECT_EQ(env["error"]["param"].is_null(), k.param.empty());
  }
}

TEST_F(OpenAiProtocolTest, ErrorEnvelopeShape) {
  const ApiError e =
      err(kChat, R"({"model": "nope", "messages": [{"role": "user", "content": "x"}]})");
  EXPECT_EQ(e.status, 404);
  EXPECT_EQ(
      Json::parse(e.to_json()),
      Json::parse(
          R"({"error": {"message": "The model `nope` does not exist.", "type": "not_found_error",
                            "param": "model", "code": "model_not_found"}})"));
  const Json plain = Json::parse(ApiError::invalid("bad").to_json());
  EXPECT_EQ(
      plain,
      Json::parse(R"({"error": {"message": "bad", "type": "invalid_request_error", "param": null,
                                              "code": null}})"));
}

TEST_F(OpenAiProtocolTest, DeepButLegalNestingInIgnoredFieldsIsFine) {
  model_.max_model_len = 100000;
  std::string nested = std::string(60, '[') + std::string(60, ']');
  EXPECT_EQ(completion(R"({"prompt": "a", "x": )" + nested + "}").requests.size(), 1u);
  // Brackets inside strings do not count.
  EXPECT_EQ(completion(R"({"prompt": ")" + std::string(1000, '[') + R"("})").requests.size(), 1u);
}

// ---- chat rendering -------------------------------------------------------------------------

// Every transformers fixture case of the tiny-qwen2-bpe and Qwen3 templates, sent as a request:
// the prompt is the template's expected text, tokenized without added special tokens.
TEST_F(OpenAiProtocolTest, ChatRenderingEqualsTransformers) {
  std::ifstream f(testing::fixtures_dir() + "/chat_template/real.json");
  ASSERT_TRUE(f.good());
  const OJson doc = OJson::parse(f);
  int checked = 0;
  for (const OJson& entry : doc["templates"]) {
    const std::string name = entry["name"];
    if (name != "tiny-qwen2-bpe" && name != "qwen3") continue;
    const std::string dir = testing::shared_dir() + "/" + entry["shared_path"].get<std::string>();
    MACSERVE_REQUIRE_PATH(dir);
    const auto tok = tokenizer::load_tokenizer(dir.substr(0, dir.rfind('/')));
    const auto tmpl = chat::ChatTemplate::parse(tok->chat_template());
    for (const OJson& c : entry["cases"]) {
      if (!c.contains("expected")) continue;
      SCOPED_TRACE(name + " " + c["name"].get<std::string>());
      const OJson& ctx = c["context"];
      ServedModel m = model_;
      m.tokenizer = tok.get();
      m.chat_template = &tmpl;
      m.bos_token = ctx["bos_token"];
      m.eos_token = ctx["eos_token"];
      m.max_model_len = 100000;
      OJson body = {{"messages", ctx["messages"]},
                    {"add_generation_prompt", ctx["add_generation_prompt"]},
                    {"chat_template_kwargs", OJson::object()}};
      for (const auto& [key, value] : ctx.items()) {
        if (key == "tools" && !value.is_null())
          body["tools"] = value;
        else if (key != "messages" && key != "add_generation_prompt" && key != "bos_token" &&
                 key != "eos_token" && key != "documents" && key != "tools")
          body["chat_template_kwargs"][key] = value;
      }
      auto r = prepare(kChat, body.dump(), m);
      ASSERT_TRUE(std::holds_alternative<Prepared>(r)) << std::get<ApiError>(r).to_json();
      const Prepared& p = std::get<Prepared>(r);
      EXPECT_EQ(p.prompt_texts.at(0), c["expected"].get<std::string>());
      EXPECT_EQ(p.requests.at(0).prompt_ids, tok->encode(c["expected"].get<std::string>(), false));
      ++checked;
    }
  }
  EXPECT_GE(checked, 30);
}

TEST_F(OpenAiProtocolTest, ContentPartsJoinWithNewlines) {
  const Prepared p =
      chat(R"({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                                         {"type": "text", "text": "b"}]}],
                             "add_generation_prompt": false})");
  EXPECT_EQ(p.prompt_texts[0], "<|im_start|>user\na\nb<|im_end|>\n");
  const Prepared q = chat(R"({"messages": [{"role": "user", "content": "x"}]})");
  EXPECT_EQ(q.prompt_texts[0], "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(q.requests[0].prompt_ids, tok_->encode(q.prompt_texts[0], false));
}

TEST_F(OpenAiProtocolTest, TemplateErrorsAndMissingTemplateAre400) {
  const auto strict = chat::ChatTemplate::parse(
      "{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
      "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
      "{% endif %}{{ m['content'] }}{% endfor %}");
  model_.chat_template = &strict;
  ApiError e =
      err(kChat,
          R"({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]})");
  EXPECT_EQ(e.status, 400);
  EXPECT_EQ(e.param, "messages");
  EXPECT_NE(e.message.find("Conversation roles must alternate"), std::string::npos) << e.message;
  model_.chat_template = nullptr;
  e = err(kChat, R"({"messages": [{"role": "user", "content": "a"}]})");
  EXPECT_EQ(e.status, 400);
  EXPECT_NE(e.message.find("no chat template"), std::string::npos) << e.message;
  // Completions do not need a template.
  EXPECT_EQ(completion(R"({"prompt": "a"})").requests.size(), 1u);
}

TEST_F(OpenAiProtocolTest, PromptForms) {
  Prepared p = completion(R"({"prompt": ["one", "two three"], "n": 2, "echo": true})");
  ASSERT_EQ(p.requests.size(), 2u);
  EXPECT_EQ(p.requests[1].prompt_ids, tok_->encode("two three", true));
  EXPECT_EQ(p.prompt_texts, (std::vector<std::string>{"one", "two three"}));
  EXPECT_EQ(p.requests[0].n, 2);
  EXPECT_TRUE(p.echo);
  p = completion(R"({"prompt": [1, 2, 3]})");
  ASSERT_EQ(p.requests.size(), 1u);
  EXPECT_EQ(p.requests[0].prompt_ids, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(p.prompt_texts[0], tok_->decode({1, 2, 3}, false));
  p = completion(R"({"prompt": [[4], [5, 6]]})");
  ASSERT_EQ(p.requests.size(), 2u);
  EXPECT_EQ(p.requests[1].prompt_ids, (std::vector<int32_t>{5, 6}));
  // At most 4096 completions per request (prompts x n).
  Json many = Json::array();
  for (int i = 0; i < 33; ++i) many.push_back("a");
  EXPECT_EQ(completion(Json{{"prompt", many}, {"n", 124}}.dump()).requests.size(), 33u);
  EXPECT_EQ(err(kCompl, Json{{"prompt", many}, {"n", 125}}.dump()).param, "prompt");
  // add_special_tokens=false for text prompts (vLLM extension).
  p = completion(R"({"prompt": "x", "add_special_tokens": false})");
  EXPECT_EQ(p.requests[0].prompt_ids, tok_->encode("x", false));
}

// ---- responses ------------------------------------------------------------------------------

engine::RequestOutput output(int32_t index, std::string text, std::vector<int32_t> ids,
                             bool finished = false,
                             engine::FinishReason reason = engine::FinishReason::kNone,
                             int64_t completion = 0) {
  engine::RequestOutput o;
  o.index = index;
  o.text = std::move(text);
  for (int32_t id : ids)
    o.tokens.push_back({id, -0.5f, {{id, -0.5f}, {id + 1, -1.5f}, {id + 2, -2.5f}}});
  o.finished = finished;
  o.finish_reason = reason;
  o.completion_tokens = completion;
  return o;
}

TEST_F(OpenAiProtocolTest, ChatCompletionObject) {
  const Prepared p = chat(R"({"messages": [{"role": "user", "content": "Hi"}], "n": 2})");
  ResponseBuilder b(p, model_, "abc", 1234);
  b.add(0, output(1, "Hel", {10}, false, engine::FinishReason::kNone, 1), nullptr);
  b.add(0, output(0, "Yo", {11, 12}, true, engine::FinishReason::kStop, 2), nullptr);
  b.add(0, output(1, "lo", {13, 14}, true, engine::FinishReason::kLength, 3), nullptr);
  EXPECT_FALSE(b.error().has_value());
  const int64_t plen = static_cast<int64_t>(p.requests[0].prompt_ids.size());
  EXPECT_EQ(b.prompt_tokens(), plen);  // once per prompt, not per choice
  EXPECT_EQ(b.completion_tokens(), 5);
  const Json r = Json::parse(b.response());
  const Json expected = {
      {"id", "chatcmpl-abc"},
      {"object", "chat.completion"},
      {"created", 1234},
      {"model", "tiny"},
      {"choices",
       {{{"index", 0},
         {"message", {{"role", "assistant"}, {"content", "Yo"}}},
         {"logprobs", nullptr},
         {"finish_reason", "stop"}},
        {{"index", 1},
         {"message", {{"role", "assistant"}, {"content", "Hello"}}},
         {"logprobs", nullptr},
         {"finish_reason", "length"}}}},
      {"usage", {{"prompt_tokens", plen}, {"completion_tokens", 5}, {"total_tokens", plen + 5}}}};
  EXPECT_EQ(r, expected) << r.dump(2);
}

TEST_F(OpenAiProtocolTest, CompletionChoicesAcrossPromptsWithEcho) {
  const Prepared p = completion(R"({"prompt": ["one", "two three"], "n": 2, "echo": true})");
  ResponseBuilder b(p, model_, "cmpl-x", 7);
  b.add(1, output(1, " B1", {5}, true, engine::FinishReason::kStop, 1), nullptr);
  b.add(0, output(0, " A0", {6, 7}, true, engine::FinishReason::kLength, 2), nullptr);
  b.add(1, output(0, " B0", {8}, true, engine::FinishReason::kAbort, 1), nullptr);
  b.add(0, output(1, " A1", {9}, true, engine::FinishReason::kStop, 1), nullptr);
  b.add(5, output(0, "ignored", {1}), nullptr);  // out-of-range indexes are ignored, never crash
  b.add(0, output(7, "ignored", {1}), nullptr);
  const Json r = Json::parse(b.response());
  EXPECT_EQ(r["id"], "cmpl-x");
  EXPECT_EQ(r["object"], "text_completion");
  ASSERT_EQ(r["choices"].size(), 4u);
  const char* texts[] = {"one A0", "one A1", "two three B0", "two three B1"};
  const char* reasons[] = {"length", "stop", "abort", "stop"};
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(r["choices"][i]["index"], i);
    EXPECT_EQ(r["choices"][i]["text"], texts[i]);
    EXPECT_EQ(r["choices"][i]["finish_reason"], reasons[i]);
    EXPECT_TRUE(r["choices"][i]["logprobs"].is_null());
  }
  const int64_t plen =
      static_cast<int64_t>(p.requests[0].prompt_ids.size() + p.requests[1].prompt_ids.size());
  EXPECT_EQ(r["usage"],
            (Json{{"prompt_tokens", plen}, {"completion_tokens", 5}, {"total_tokens", plen + 5}}));
}

TEST_F(OpenAiProtocolTest, ChatStreamingChunks) {
  const Prepared p = chat(R"({"messages": [{"role": "user", "content": "Hi"}], "stream": true,
                             "stream_options": {"include_usage": true}})");
  ResponseBuilder b(p, model_, "s1", 99);
  std::vector<std::string> chunks;
  b.add(0, output(0, "He", {10}, false, engine::FinishReason::kNone, 1), &chunks);
  b.add(0, output(0, "", {11}, false, engine::FinishReason::kNone, 2),
        &chunks);  // held-back text: no chunk
  b.add(0, output(0, "llo", {12}, true, engine::FinishReason::kStop, 3), &chunks);
  b.finish_stream(&chunks);
  ASSERT_EQ(chunks.size(), 4u);
  auto choice = [&](size_t i) { return Json::parse(chunks[i])["choices"][0]; };
  const Json first = Json::parse(chunks[0]);
  EXPECT_EQ(first["id"], "chatcmpl-s1");
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["created"], 99);
  EXPECT_EQ(first["model"], "tiny");
  EXPECT_TRUE(first.contains("usage") && first["usage"].is_null());
  EXPECT_EQ(choice(0), (Json{{"index", 0},
                             {"delta", {{"role", "assistant"}, {"content", ""}}},
                             {"logprobs", nullptr},
                             {"finish_reason", nullptr}}));
  EXPECT_EQ(choice(1), (Json{{"index", 0},
                             {"delta", {{"content", "He"}}},
                             {"logprobs", nullptr},
                             {"finish_reason", nullptr}}));
  EXPECT_EQ(choice(2), (Json{{"index", 0},
                             {"delta", {{"content", "llo"}}},
                             {"logprobs", nullptr},
                             {"finish_reason", "stop"}}));
  const Json last = Json::parse(chunks[3]);
  EXPECT_EQ(last["choices"], Json::array());
  const int64_t plen = static_cast<int64_t>(p.requests[0].prompt_ids.size());
  EXPECT_EQ(last["usage"],
            (Json{{"prompt_tokens", plen}, {"completion_tokens", 3}, {"total_tokens", plen + 3}}));
  // A final output without text gives an empty delta with the finish reason.
  const Prepared q = chat(R"({"messages": [{"role": "user", "content": "Hi"}], "stream": true})");
  ResponseBuilder b2(q, model_, "s2", 1);
  std::vector<std::string> c2;
  b2.add(0, output(0, "", {}, true, engine::FinishReason::kLength, 0), &c2);
  b2.finish_stream(&c2);  // no include_usage: nothing more
  ASSERT_EQ(c2.size(), 2u);
  EXPECT_FALSE(Json::parse(c2[1]).contains("usage"));
  EXPECT_EQ(Json::parse(c2[1])["choices"][0]["delta"], Json::object());
  EXPECT_EQ(Json::parse(c2[1])["choices"][0]["finish_reason"], "length");
}

TEST_F(OpenAiProtocolTest, CompletionStreamingEchoAndIndexes) {
  const Prepared p =
      completion(R"({"prompt": ["P0", "P1"], "n": 2, "stream": true, "echo": true})");
  ResponseBuilder b(p, model_, "z", 5);
  std::vector<std::string> chunks;
  b.add(1, output(1, "x", {3}, true, engine::FinishReason::kStop, 1), &chunks);
  ASSERT_EQ(chunks.size(), 2u);
  const Json echo = Json::parse(chunks[0]);
  EXPECT_EQ(echo["object"], "text_completion");
  EXPECT_EQ(
      echo["choices"][0],
      (Json{{"index", 3}, {"text", "P1"}, {"logprobs", nullptr}, {"finish_reason", nullptr}}));
  EXPECT_EQ(Json::parse(chunks[1])["choices"][0],
            (Json{{"index", 3}, {"text", "x"}, {"logprobs", nullptr}, {"finish_reason", "stop"}}));
}

TEST_F(OpenAiProtocolTest, ChatLogprobsShape) {
  const Prepared p = chat(
      R"({"messages": [{"role": "user", "content": "Hi"}], "logprobs": true, "top_logprobs": 2})");
  ResponseBuilder b(p, model_, "l", 1);
  const int32_t id = tok_->encode("Hello", false).at(0);
  b.add(0, output(0, tok_->decode({id}, true), {id}, true, engine::FinishReason::kStop, 1),
        nullptr);
  const Json lp = Json::parse(b.response())["choices"][0]["logprobs"];
  ASSERT_EQ(lp["content"].size(), 1u);
  const Json& e = lp["content"][0];
  const std::string bytes = tok_->token_bytes(id);
  EXPECT_EQ(e["token"], bytes);
  EXPECT_DOUBLE_EQ(e["logprob"].get<double>(), -0.5);
  std::vector<int> b_ints(bytes.begin(), bytes.end());
  EXPECT_EQ(e["bytes"], Json(b_ints));
  ASSERT_EQ(e["top_logprobs"].size(), 2u);  // top_logprobs=2 of the 3 alternatives
  EXPECT_EQ(e["top_logprobs"][1]["token"], tok_->token_bytes(id + 1));
  EXPECT_DOUBLE_EQ(e["top_logprobs"][1]["logprob"].get<double>(), -1.5);
  EXPECT_TRUE(e["top_logprobs"][1].contains("bytes"));
}

TEST_F(OpenAiProtocolTest, CompletionLogprobsShape) {
  const Prepared p = completion(R"({"prompt": "Hi", "logprobs": 1, "stream": true})");
  ResponseBuilder b(p, model_, "l", 1);
  const auto ids = tok_->encode("Hello world", false);
  ASSERT_GE(ids.size(), 2u);
  std::vector<std::string> chunks;
  b.add(0, output(0, tok_->decode({ids[0]}, true), {ids[0]}), &chunks);
  b.add(0, output(0, tok_->decode({ids[1]}, true), {ids[1]}, true, engine::FinishReason::kStop, 2),
        &chunks);
  ASSERT_EQ(chunks.size(), 2u);
  const Json lp0 = Json::parse(chunks[0])["choices"][0]["logprobs"];
  const Json lp1 = Json::parse(chunks[1])["choices"][0]["logprobs"];
  const std::string t0 = tok_->token_bytes(ids[0]);
  EXPECT_EQ(lp0["tokens"], Json::array({t0}));
  EXPECT_EQ(lp0["token_logprobs"], Json::array({-0.5}));
  EXPECT_EQ(lp0["text_offset"], Json::array({0}));
  EXPECT_EQ(lp1["text_offset"],
            Json::array({static_cast<int64_t>(t0.size())}));  // ASCII: bytes = code points
  ASSERT_EQ(lp0["top_logprobs"].size(), 1u);
  EXPECT_EQ(lp0["top_logprobs"][0],
            (Json{{t0, -0.5}}));  // logprobs=1: the top alternative (the token itself)
}

TEST_F(OpenAiProtocolTest, EngineErrorsMapToStatuses) {
  engine::RequestOutput o;
  o.finished = true;
  o.finish_reason = engine::FinishReason::kError;
  struct Row {
    engine::ErrorKind kind;
    int status;
    const char* type;
    const char* code;
  };
  const Row rows[] = {
      {engine::ErrorKind::kInvalidRequest, 400, "invalid_request_error", ""},
      {engine::ErrorKind::kContextLength, 400, "invalid_request_error", "context_length_exceeded"},
      {engine::ErrorKind::kQueueFull, 429, "requests", "rate_limit_exceeded"},
      {engine::ErrorKind::kUnavailable, 503, "server_error", "service_unavailable"},
      {engine::ErrorKind::kInternal, 500, "server_error", ""},
      {engine::ErrorKind::kNone, 500, "server_error", ""}};
  for (const Row& row : rows) {
    o.error_kind = row.kind;
    o.error = "secret detail: CUDA at 0xdeadbeef";
    const ApiError e = error_from_engine(o);
    EXPECT_EQ(e.status, row.status);
    EXPECT_EQ(e.type, row.type);
    EXPECT_EQ(e.code, row.code);
    const bool passes_message = row.kind == engine::ErrorKind::kInvalidRequest ||
                                row.kind == engine::ErrorKind::kContextLength;
    EXPECT_EQ(e.message.find("0xdeadbeef") != std::string::npos, passes_message) << e.message;
  }
  // A failed choice: error() is set and no chunk is produced for it.
  const Prepared p = chat(R"({"messages": [{"role": "user", "content": "Hi"}], "stream": true})");
  ResponseBuilder b(p, model_, "e", 1);
  std::vector<std::string> chunks;
  o.error_kind = engine::ErrorKind::kQueueFull;
  b.add(0, o, &chunks);
  EXPECT_TRUE(chunks.empty());
  ASSERT_TRUE(b.error().has_value());
  EXPECT_EQ(b.error()->status, 429);
}

// ---- tokenize / detokenize / models -----------------------------------------------------------

TEST_F(OpenAiProtocolTest, TokenizeDetokenizeAndModels) {
  auto r = tokenize(R"({"prompt": "Hello world"})", model_);
  ASSERT_TRUE(std::holds_alternative<std::string>(r));
  const auto ids = tok_->encode("Hello world", true);
  EXPECT_EQ(Json::parse(std::get<std::string>(r)),
            (Json{{"count", ids.size()}, {"max_model_len", 128}, {"tokens", ids}}));
  r = tokenize(
      R"({"messages": [{"role": "user", "content": "x"}], "add_generation_prompt": false})",
      model_);
  ASSERT_TRUE(std::holds_alternative<std::string>(r));
  EXPECT_EQ(Json::parse(std::get<std::string>(r))["tokens"],
            Json(tok_->encode("<|im_start|>user\nx<|im_end|>\n", false)));
  EXPECT_EQ(std::get<ApiError>(tokenize(R"({"prompt": 5})", model_)).param, "prompt");
  EXPECT_EQ(std::get<ApiError>(tokenize(R"({"model": "x", "prompt": "a"})", model_)).status, 404);

  r = detokenize(Json{{"tokens", ids}}.dump(), model_);
  ASSERT_TRUE(std::holds_alternative<std::string>(r));
  EXPECT_EQ(Json::parse(std::get<std::string>(r)), (Json{{"prompt", "Hello world"}}));
  const int32_t eos = tok_->piece_to_id("<|im_end|>");
  ASSERT_GE(eos, 0);
  EXPECT_EQ(Json::parse(std::get<std::string>(
                detokenize(Json{{"tokens", {eos}}}.dump(), model_)))["prompt"],
            "<|im_end|>");
  ApiError e =
      std::get<ApiError>(detokenize(Json{{"tokens", {1, tok_->vocab_size()}}}.dump(), model_));
  EXPECT_EQ(e.status, 400);
  EXPECT_EQ(e.param, "tokens");
  EXPECT_EQ(std::get<ApiError>(detokenize(R"({"tokens": [-1]})", model_)).param, "tokens");
  EXPECT_EQ(std::get<ApiError>(detokenize(R"({"tokens": "1"})", model_)).param, "tokens");
  EXPECT_EQ(std::get<ApiError>(detokenize(R"(nope)", model_)).status, 400);

  EXPECT_EQ(
      Json::parse(models_list(model_)),
      Json::parse(
          R"({"object": "list", "data": [{"id": "tiny", "object": "model", "created": 1700000000,
                            "owned_by": "macserve", "max_model_len": 128}]})"));
}

// ---- skip_special_tokens reaches the engine's detokenizer ------------------------------------

TEST_F(OpenAiProtocolTest, SequenceHonoursSkipSpecialTokens) {
  const int32_t eos = tok_->piece_to_id("<|im_end|>");
  ASSERT_GE(eos, 0);
  ASSERT_TRUE(tok_->is_special(eos));
  for (const bool skip : {true, false}) {
    auto p = completion(Json{{"prompt", "a"}, {"skip_special_tokens", skip}}.dump());
    engine::Sequence seq("r", 0, p.requests[0].prompt_ids, p.requests[0].params, nullptr, *tok_, 1);
    std::string text;
    for (const int32_t id : tok_->encode("Hi", false)) text += seq.detokenizer.push(id);
    text += seq.detokenizer.push(eos);
    text += seq.detokenizer.flush();
    EXPECT_EQ(text, skip ? "Hi" : "Hi<|im_end|>");
  }
}

// ---- request_fields.h: the checks HTTP and gRPC share ----------------------------------------

ApiError thrown(const std::function<void()>& f) {
  try {
    f();
  } catch (const ApiException& e) {
    return e.error;
  }
  ADD_FAILURE() << "no ApiException";
  return {};
}

TEST_F(OpenAiProtocolTest, SharedSamplingChecksGiveHttpsMessages) {
  SamplingFields f;
  f.temperature = Given<double>{0.5, "0.5"};
  f.top_k = Given<int64_t>{7, "7"};
  f.stop = {"END"};
  f.stop_token_ids = {Given<int64_t>{5, "5"}};
  f.logit_bias = {{Given<int64_t>{9, "9"}, Given<double>{-100.0, "-100"}}};
  const sampling::SamplingParams p = build_sampling(f, model_);
  EXPECT_FLOAT_EQ(p.temperature, 0.5f);
  EXPECT_EQ(p.top_k, 7);
  EXPECT_FLOAT_EQ(p.top_p, 1.0f);  // defaults as HTTP's
  EXPECT_TRUE(p.skip_special_tokens);
  EXPECT_EQ(p.stop, std::vector<std::string>{"END"});
  EXPECT_EQ(p.stop_token_ids, std::vector<int32_t>{5});
  ASSERT_EQ(p.logit_bias.size(), 1u);
  EXPECT_EQ(p.logit_bias[0].first, 9);

  // The same bad value through the JSON path and through SamplingFields: the same error.
  SamplingFields bad;
  bad.temperature = Given<double>{3.0, "3.0"};
  const ApiError shared = thrown([&] { build_sampling(bad, model_); });
  const ApiError http = err(Endpoint::kCompletions, R"({"prompt": "x", "temperature": 3.0})");
  EXPECT_EQ(shared.message, http.message);
  EXPECT_EQ(shared.param, "temperature");
  EXPECT_EQ(shared.status, 400);

  SamplingFields vocab;
  vocab.stop_token_ids = {Given<int64_t>{1 << 30, "1073741824"}};
  EXPECT_EQ(thrown([&] { build_sampling(vocab, model_); }).param, "stop_token_ids");
  SamplingFields negative;
  negative.min_tokens = Given<int64_t>{-1, "-1"};
  EXPECT_NE(thrown([&] { build_sampling(negative, model_); }).message.find("minimum value"),
            std::string::npos);
}

TEST_F(OpenAiProtocolTest, SharedRequestAndChatRendering) {
  // Context: 128 tokens. A prompt of 100 ids with max_tokens 50 is refused as HTTP refuses it.
  const std::vector<int32_t> ids(100, 42);
  const ApiError e =
      thrown([&] { make_request(ids, sampling::SamplingParams{}, 1, 50, "messages", model_); });
  EXPECT_EQ(e.code, "context_length_exceeded");
  EXPECT_EQ(e.param, "messages");
  const engine::Request r =
      make_request(ids, sampling::SamplingParams{}, 2, std::nullopt, "prompt", model_);
  EXPECT_EQ(r.params.max_tokens, 28);  // whatever fits
  EXPECT_EQ(r.n, 2);
  EXPECT_EQ(thrown([&] { check_max_tokens({0, "0"}, "max_tokens", model_); }).param, "max_tokens");

  // render_chat_messages is what the chat endpoint renders.
  chat::ChatMessage m;
  m.role = "user";
  m.content = "Hello there";
  const PromptIds direct =
      render_chat_messages({m}, true, false, nlohmann::ordered_json::object(), model_);
  const Prepared p = chat(R"({"messages": [{"role": "user", "content": "Hello there"}]})");
  EXPECT_EQ(direct.ids, p.requests[0].prompt_ids);
  EXPECT_TRUE(is_known_role("tool"));
  EXPECT_FALSE(is_known_role("wizard"));
}

}  // namespace
}  // namespace macserve::openai
