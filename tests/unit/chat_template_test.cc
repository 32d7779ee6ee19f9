// Chat templates: every fixture case (rendered by Python jinja2 as transformers renders it, see
// scripts/gen_chat_template_fixtures.py) must come out byte for byte; templates Python rejects
// must raise macserve::Error; hostile templates must end in an Error, not a crash or a hang.
#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "macserve/chat/chat_template.h"
#include "macserve/core/error.h"
#include "test_paths.h"

namespace macserve::chat {
namespace {

using Json = nlohmann::ordered_json;

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

Json load_fixture(const std::string& name) {
  const std::string path = testing::fixtures_dir() + "/chat_template/" + name;
  EXPECT_TRUE(testing::exists(path)) << path;
  return Json::parse(read_file(path));
}

// SHA-256 (FIPS 180-4), to notice when a template in ../shared changes under its fixture.
std::string sha256_hex(const std::string& data) {
  static constexpr std::array<uint32_t, 64> k = {
      0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
      0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
      0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
      0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
      0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
      0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
      0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
      0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
      0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
      0xc67178f2};
  std::array<uint32_t, 8> h = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                               0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  std::string msg = data;
  const uint64_t bits = static_cast<uint64_t>(data.size()) * 8;
  msg.push_back(static_cast<char>(0x80));
  while (msg.size() % 64 != 56) msg.push_back('\0');
  for (int i = 7; i >= 0; --i) msg.push_back(static_cast<char>((bits >> (i * 8)) & 0xff));
  const auto rotr = [](uint32_t x, int n) { return (x >> n) | (x << (32 - n)); };
  for (size_t chunk = 0; chunk < msg.size(); chunk += 64) {
    std::array<uint32_t, 64> w{};
    for (int i = 0; i < 16; ++i) {
      for (int b = 0; b < 4; ++b) {
        w[i] = (w[i] << 8) | static_cast<unsigned char>(msg[chunk + i * 4 + b]);
      }
    }
    for (int i = 16; i < 64; ++i) {
      const uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    std::array<uint32_t, 8> v = h;
    for (int i = 0; i < 64; ++i) {
      const uint32_t s1 = rotr(v[4], 6) ^ rotr(v[4], 11) ^ rotr(v[4], 25);
      const uint32_t ch = (v[4] & v[5]) ^ (~v[4] & v[6]);
      const uint32_t t1 = v[7] + s1 + ch + k[i] + w[i];
      const uint32_t s0 = rotr(v[0], 2) ^ rotr(v[0], 13) ^ rotr(v[0], 22);
      const uint32_t maj = (v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]);
      const uint32_t t2 = s0 + maj;
      for (int j = 7; j > 0; --j) v[j] = v[j - 1];
      v[4] += t1;
      v[0] = t1 + t2;
    }
    for (int i = 0; i < 8; ++i) h[i] += v[i];
  }
  std::string hex;
  for (uint32_t x : h) hex += fmt::format("{:08x}", x);
  return hex;
}

// The template text of a fixture entry: inline, or from ../shared (empty when ../shared is
// missing). A changed shared file fails the test: its fixture must be regenerated.
std::string template_source(const Json& entry) {
  if (entry.contains("template")) return entry["template"].get<std::string>();
  const std::string path = testing::shared_dir() + "/" + entry["shared_path"].get<std::string>();
  if (!testing::exists(path)) return {};
  const std::string source = Json::parse(read_file(path))[entry["json_key"].get<std::string>()];
  EXPECT_EQ(sha256_hex(source), entry["sha256"].get<std::string>())
      << path << " changed: rerun scripts/gen_chat_template_fixtures.py";
  return source;
}

// Renders every case of a fixture file; returns the number of cases run.
int check_fixture_file(const std::string& name) {
  const Json doc = load_fixture(name);
  const Json defaults = doc.value("default_context", Json::object());
  int checked = 0;
  for (const Json& entry : doc["templates"]) {
    const std::string source = template_source(entry);
    if (source.empty() && !entry.contains("template")) continue;  // ../shared absent
    SCOPED_TRACE("template " + entry["name"].get<std::string>());
    std::optional<ChatTemplate> tmpl;
    std::string parse_error;
    try {
      tmpl = ChatTemplate::parse(source);
    } catch (const Error& e) {
      parse_error = e.what();
    }
    for (const Json& c : entry["cases"]) {
      SCOPED_TRACE("case " + c["name"].get<std::string>());
      Json context = defaults;
      for (const auto& [key, value] : c["context"].items()) context[key] = value;
      ++checked;
      if (c.contains("expected")) {
        if (!tmpl) {
          ADD_FAILURE() << "parse failed: " << parse_error;
          continue;
        }
        try {
          EXPECT_EQ(tmpl->render(context), c["expected"].get<std::string>());
        } catch (const Error& e) {
          ADD_FAILURE() << "unexpected error: " << e.what();
        }
        continue;
      }
      // Python raised: so must we, at parse or at render time.
      if (!tmpl) continue;
      try {
        const std::string out = tmpl->render(context);
        ADD_FAILURE() << "expected an error like Python's " << c["error"] << ", got: " << out;
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(c.value("error_contains", "")), std::string::npos)
            << e.what();
      }
    }
  }
  return checked;
}

TEST(ChatTemplateFixtures, RealTemplates) {
  MACSERVE_REQUIRE_PATH(testing::shared_dir() + "/tokenizers/qwen3/tokenizer_config.json");
  EXPECT_GT(check_fixture_file("real.json"), 100);
}

TEST(ChatTemplateFixtures, SyntheticTemplates) {
  EXPECT_GT(check_fixture_file("synthetic.json"), 150);
}

// apply_chat_template builds the same context transformers does: rebuild each real case from
// its messages and compare with the fixture.
TEST(ChatTemplateFixtures, ApplyChatTemplateMatchesTransformers) {
  MACSERVE_REQUIRE_PATH(testing::shared_dir() + "/tokenizers/qwen3/tokenizer_config.json");
  const Json doc = load_fixture("real.json");
  int checked = 0;
  for (const Json& entry : doc["templates"]) {
    const ChatTemplate tmpl = ChatTemplate::parse(template_source(entry));
    for (const Json& c : entry["cases"]) {
      if (!c.contains("expected")) continue;
      SCOPED_TRACE(entry["name"].get<std::string>() + " " + c["name"].get<std::string>());
      const Json& ctx = c["context"];
      std::vector<ChatMessage> messages;
      for (const Json& m : ctx["messages"]) {
        ChatMessage msg{m["role"], m.value("content", ""), Json::object()};
        for (const auto& [key, value] : m.items()) {
          if (key != "role" && key != "content") msg.extra[key] = value;
        }
        if (!m.contains("content")) msg.extra["content"] = nullptr;
        messages.push_back(std::move(msg));
      }
      Json extra = Json::object();
      for (const auto& [key, value] : ctx.items()) {
        if (key != "messages" && key != "add_generation_prompt" && key != "bos_token" &&
            key != "eos_token" && key != "documents" && !(key == "tools" && value.is_null())) {
          extra[key] = value;
        }
      }
      EXPECT_EQ(apply_chat_template(tmpl, messages, ctx["add_generation_prompt"], ctx["bos_token"],
                                    ctx["eos_token"], extra),
                c["expected"].get<std::string>());
      ++checked;
    }
  }
  EXPECT_GT(checked, 100);
}

// ---- errors --------------------------------------------------------------------------------

std::string error_of(const std::string& source, const Json& context = Json::object(),
                     const RenderLimits& limits = {}) {
  try {
    const std::string out = ChatTemplate::parse(source).render(context, limits);
    return "no error, output of " + std::to_string(out.size()) + " bytes";
  } catch (const Error& e) {
    return e.what();
  }
}

TEST(ChatTemplateErrors, SyntaxErrorsNameLineAndColumn) {
  const std::string e = error_of("line one\n{% if x %}\n{{ a + }}\n{% endif %}");
  EXPECT_NE(e.find("syntax error at line 3, column 8"), std::string::npos) << e;
  EXPECT_NE(error_of("{% for x in y %}").find("expected 'endfor' or 'else'"), std::string::npos);
  EXPECT_NE(error_of("{{ x | nosuchfilter }}").find("No filter named 'nosuchfilter'"),
            std::string::npos);
  EXPECT_NE(error_of("\n\n  {% endif %}").find("line 3, column 6: Encountered unknown tag 'endif'"),
            std::string::npos)
      << error_of("\n\n  {% endif %}");
  EXPECT_NE(error_of("{{ 'abc\xff' }}").find("not valid UTF-8"), std::string::npos);
}

TEST(ChatTemplateErrors, RaiseExceptionCarriesTheMessage) {
  const std::string src =
      "{% for m in messages %}{% if m.role not in ['user', 'assistant'] %}"
      "{{ raise_exception('Only user and assistant roles are supported, got ' + m.role) }}"
      "{% endif %}{% endfor %}";
  const Json ctx = {{"messages", {{{"role", "user"}, {"content", "x"}}, {{"role", "tool"}}}}};
  try {
    ChatTemplate::parse(src).render(ctx);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(std::string(e.what()), "Only user and assistant roles are supported, got tool");
  }
}

TEST(ChatTemplateErrors, RuntimeErrorsNamePosition) {
  const std::string e =
      error_of("ok\n  {{ messages[0].content + 1 }}", {{"messages", {{{"content", "text"}}}}});
  EXPECT_NE(e.find("line 2, column"), std::string::npos) << e;
  EXPECT_NE(e.find("can only concatenate str (not \"int\") to str"), std::string::npos) << e;
  EXPECT_NE(error_of("{{ x.y }}").find("'x' is undefined"), std::string::npos);
  // Python ints are unbounded; 64-bit overflow must be an error, never a wrong number or UB
  // (found by fuzzing: '%d' of a huge float).
  EXPECT_NE(error_of("{{ '%d' % 4.23e257 }}").find("does not fit in 64 bits"), std::string::npos);
  EXPECT_NE(error_of("{{ 9223372036854775807 + 1 }}").find("OverflowError"), std::string::npos);
  EXPECT_NE(error_of("{{ 9223372036854775807|round(-1) }}").find("OverflowError"),
            std::string::npos);
  EXPECT_NE(error_of("{{ 2 ** 64 }}").find("OverflowError"), std::string::npos);
}

// ---- hostile templates: each must end with an Error, quickly -----------------------------

struct Hostile {
  const char* what;
  std::string source;
};

std::vector<Hostile> hostile_templates() {
  std::vector<Hostile> h;
  h.push_back({"deep parentheses in a tag",
               "{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}"});
  h.push_back({"long not chain", "{{ " + [] {
                 std::string s;
                 for (int i = 0; i < 50000; ++i) s += "not ";
                 return s;
               }() + "x }}"});
  h.push_back({"long unary minus chain", "{{ " + std::string(50000, '-') + "1 }}"});
  h.push_back({"long + chain", "{{ 1" + [] {
                 std::string s;
                 for (int i = 0; i < 50000; ++i) s += "+1";
                 return s;
               }() + " }}"});
  h.push_back({"long filter chain", "{{ 'x'" + [] {
                 std::string s;
                 for (int i = 0; i < 50000; ++i) s += "|upper";
                 return s;
               }() + " }}"});
  h.push_back({"deep if nesting", [] {
                 std::string s;
                 for (int i = 0; i < 5000; ++i) s += "{% if true %}";
                 for (int i = 0; i < 5000; ++i) s += "{% endif %}";
                 return s;
               }()});
  h.push_back(
      {"deep list literal", "{{ " + std::string(5000, '[') + std::string(5000, ']') + " }}"});
  h.push_back({"nested huge loops",
               "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"});
  h.push_back(
      {"infinite macro recursion", "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"});
  h.push_back(
      {"exponential macro fan-out",
       "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}x{% endmacro %}"
       "{{ f(40) }}"});
  h.push_back(
      {"recursive loop forever", "{% for x in [[1]] recursive %}{{ loop([x]) }}{% endfor %}"});
  h.push_back({"10 MB output", "{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}"});
  h.push_back({"string doubling",
               "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
               "{% endfor %}{{ ns.s|length }}"});
  h.push_back({"huge repetition", "{{ 'x' * 1000000000000 }}"});
  h.push_back({"huge list repetition", "{{ ([1] * 1000000000)|length }}"});
  h.push_back({"list doubling",
               "{% set ns = namespace(l=[1]) %}{% for i in range(64) %}{% set ns.l = ns.l + ns.l %}"
               "{% endfor %}{{ ns.l|length }}"});
  h.push_back({"deep value nesting",
               "{% set ns = namespace(l=[]) %}{% for i in range(100000) %}{% set ns.l = [ns.l] %}"
               "{% endfor %}{{ ns.l }}"});
  h.push_back({"big repr", "{% set l = ['y' * 100000] * 1000 %}{{ l }}"});
  h.push_back({"big join", "{{ (['y' * 100000] * 1000)|join }}"});
  h.push_back({"big tojson indent", "{{ [[1, [2]]]|tojson(indent=100000000) }}"});
  h.push_back({"big center", "{{ 'a'|center(1000000000) }}"});
  h.push_back({"big indent", "{{ 'a\nb'|indent(1000000000) }}"});
  h.push_back({"big format width", "{{ '%999999999s' % 'x' }}"});
  h.push_back({"big str.format width", "{{ '{:>999999999}'.format('x') }}"});
  h.push_back({"big ljust", "{{ 'x'.ljust(1000000000) }}"});
  h.push_back({"big replace", "{{ ('y' * 100000)|replace('y', 'z' * 1000) }}"});
  h.push_back({"huge range", "{% for i in range(1000000000000000000) %}{% endfor %}"});
  h.push_back({"quadratic string indexing",
               "{% set s = 'y' * 1000000 %}{% for i in range(100000) %}{{ s[-1] }}{% endfor %}"});
  h.push_back({"self-referencing namespace",
               "{% set ns = namespace() %}{% set ns.me = ns %}{% for i in range(100000) %}"
               "{% for j in range(100000) %}{% endfor %}{% endfor %}"});
  return h;
}

TEST(ChatTemplateHostile, EndWithAnErrorNotACrashOrHang) {
  for (const Hostile& h : hostile_templates()) {
    SCOPED_TRACE(h.what);
    const auto start = std::chrono::steady_clock::now();
    const std::string e = error_of(h.source);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_EQ(e.find("no error"), std::string::npos) << e;
    std::printf("  %-32s %6.3f s  %s\n", h.what, seconds, e.substr(0, 110).c_str());
  }
}

TEST(ChatTemplateHostile, LimitsAreConfigurable) {
  RenderLimits small;
  small.max_output_bytes = 1000;
  const std::string e = error_of("{% for i in range(100) %}{{ 'x' * 20 }}{% endfor %}", {}, small);
  EXPECT_NE(e.find("limit of 1000 bytes"), std::string::npos) << e;
  try {
    ChatTemplate::parse("{% for i in range(100000) %}{% endfor %}").render({}, {1 << 20, 1000});
    FAIL() << "no error";
  } catch (const Error& err) {
    EXPECT_EQ(err.code(), ErrorCode::kResourceExhausted) << err.what();
  }
  // A long conversation widens the output budget: it is never the template's fault.
  const std::string big(5 << 20, 'z');
  const Json ctx = {{"messages", {{{"role", "user"}, {"content", big}}}}};
  EXPECT_EQ(ChatTemplate::parse("{{ messages[0].content }}").render(ctx).size(), big.size());
}

// ---- API behaviour -----------------------------------------------------------------------

TEST(ChatTemplateApi, KeyOrderFollowsTheContext) {
  const ChatTemplate t = ChatTemplate::parse("{{ tool|tojson }}");
  const Json ordered = Json::parse(R"({"tool": {"zeta": 1, "alpha": {"b": 2, "a": 3}}})");
  EXPECT_EQ(t.render(ordered), R"({"zeta": 1, "alpha": {"b": 2, "a": 3}})");
  const nlohmann::json sorted = nlohmann::json::parse(R"({"tool": {"zeta": 1, "alpha": 2}})");
  EXPECT_EQ(t.render(sorted), R"({"alpha": 2, "zeta": 1})");
}

TEST(ChatTemplateApi, StrftimeNowUsesTheClockUnlessFixed) {
  const ChatTemplate t = ChatTemplate::parse("{{ strftime_now('%Y') }}");
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  EXPECT_EQ(t.render(Json::object()), std::to_string(tm.tm_year + 1900));
  EXPECT_EQ(ChatTemplate::parse("{{ strftime_now('%d %b %Y, %A') }}")
                .render({{"__macserve_now__", "2031-02-03"}}),
            "03 Feb 2031, Monday");
  EXPECT_NE(error_of("{{ 1 }}", {{"__macserve_now__", "tomorrow"}}).find("YYYY-MM-DD"),
            std::string::npos);
}

TEST(ChatTemplateApi, ApplyChatTemplateContext) {
  const ChatTemplate t = ChatTemplate::parse(
      "{{ bos_token }}{% for m in messages %}{{ m|tojson }};{% endfor %}{{ tools }}|"
      "{{ documents }}|{{ add_generation_prompt }}|{{ eos_token }}|{{ enable_thinking }}");
  std::vector<ChatMessage> messages = {
      {"user", "hi", Json::object()},
      {"assistant", "ok", {{"reasoning", "why"}, {"name", nullptr}}}};
  EXPECT_EQ(apply_chat_template(t, messages, true, "<s>", "</s>", {{"enable_thinking", false}}),
            "<s>{\"role\": \"user\", \"content\": \"hi\"};"
            "{\"thinking\": \"why\", \"role\": \"assistant\", \"content\": \"ok\", \"reasoning\": "
            "\"why\", \"reasoning_content\": \"why\"};None|None|True|</s>|False");
}

TEST(ChatTemplateApi, ConcurrentRendersShareOneTemplate) {
  const ChatTemplate t = ChatTemplate::parse(
      "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + m.content|length %}"
      "{% endfor %}{{ ns.n }}");
  const Json ctx = {{"messages", {{{"content", "abc"}}, {{"content", "de"}}}}};
  std::vector<std::thread> threads;
  std::vector<std::string> out(8);
  for (size_t i = 0; i < out.size(); ++i) {
    threads.emplace_back([&, i] {
      for (int k = 0; k < 200; ++k) out[i] = t.render(ctx);
    });
  }
  for (auto& th : threads) th.join();
  for (const auto& o : out) EXPECT_EQ(o, "5");
}

}  // namespace
}  // namespace macserve::chat
