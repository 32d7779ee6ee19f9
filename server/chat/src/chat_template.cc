// The public API: parsing, the JSON context as template values, and apply_chat_template.
#include "macserve/chat/chat_template.h"

#include <ctime>

#include "bounds.h"
#include "interpreter.h"
#include "macserve/core/error.h"
#include "parser.h"

namespace macserve::chat {

struct ChatTemplate::Impl {
  std::string source;
  Program program;
};

namespace {

// How much context a render got: a long conversation earns a larger budget than the fixed one.
struct ContextSize {
  size_t text_bytes = 0;
  size_t values = 0;
};

// JSON -> template value.
Value from_json(const nlohmann::ordered_json& j, ContextSize& size, int depth) {
  if (depth > kMaxValueDepth) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("chat template context nests deeper than {} levels", kMaxValueDepth));
  }
  using Type = nlohmann::ordered_json::value_t;
  ++size.values;
  switch (j.type()) {
    case Type::null:
      return Value::none();
    case Type::boolean:
      return Value::boolean(j.get<bool>());
    case Type::number_integer:
      return Value::integer(j.get<int64_t>());
    case Type::number_unsigned: {
      const auto u = j.get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) {
        throw Error(ErrorCode::kInvalidArgument,
                    fmt::format("chat template context: integer {} does not fit in 64 bits", u));
      }
      return Value::integer(static_cast<int64_t>(u));
    }
    case Type::number_float:
      return Value::real(j.get<double>());
    case Type::string:
      size.text_bytes += j.get_ref<const std::string&>().size();
      return Value::string(j.get<std::string>());
    case Type::array: {
      std::vector<Value> items;
      items.reserve(j.size());
      for (const auto& item : j) items.push_back(from_json(item, size, depth + 1));
      return Value::list(std::move(items));
    }
    case Type::object: {
      auto dict = std::make_shared<DictData>();
      for (const auto& [key, item] : j.items()) {
        size.text_bytes += key.size();
        dict->set(Value::string(key), from_json(item, size, depth + 1));
      }
      return Value::dict(std::move(dict));
    }
    case Type::binary:
    case Type::discarded:
      break;
  }
  throw Error(ErrorCode::kInvalidArgument, "chat template context holds a non-JSON value");
}

// "YYYY-MM-DD" -> midnight of that day, with weekday and day of year filled in.
std::tm parse_fixed_date(const std::string& text) {
  int y = 0;
  int m = 0;
  int d = 0;
  char tail = '\0';
  if (std::sscanf(text.c_str(), "%4d-%2d-%2d%c", &y, &m, &d, &tail) != 3 || m < 1 || m > 12 ||
      d < 1 || d > 31 || y < 1) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("__macserve_now__ must be \"YYYY-MM-DD\", got \"{}\"", text));
  }
  std::tm tm{};
  tm.tm_year = y - 1900;
  tm.tm_mon = m - 1;
  tm.tm_mday = d;
  const std::time_t t = timegm(&tm);
  std::tm out{};
  gmtime_r(&t, &out);
  out.tm_isdst = -1;
  return out;
}

}  // namespace

ChatTemplate ChatTemplate::parse(const std::string& source) {
  auto impl = std::make_shared<Impl>();
  impl->source = source;
  impl->program = parse_template(source);
  return ChatTemplate(std::move(impl));
}

const std::string& ChatTemplate::source() const { return impl_->source; }

std::string ChatTemplate::render(const nlohmann::ordered_json& context,
                                 const RenderLimits& limits) const {
  if (!context.is_object() && !context.is_null()) {
    throw Error(ErrorCode::kInvalidArgument, "chat template context must be a JSON object");
  }
  auto root = std::make_shared<Scope>(nullptr);
  ContextSize size;
  std::optional<std::tm> fixed_now;
  try {
    for (const auto& [key, value] : context.items()) {
      root->set(key, from_json(value, size, 0));
      if (key == "__macserve_now__" && value.is_string()) {
        fixed_now = parse_fixed_date(value.get<std::string>());
      }
    }
  } catch (const TemplateError& e) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("chat template context: {}", e.what()));
  }
  Budget budget;
  budget.max_bytes = limits.max_output_bytes + 2 * size.text_bytes;
  budget.max_steps = limits.max_steps + 1000 * size.values;
  try {
    Interpreter interp(budget, fixed_now);
    return interp.render(impl_->program, root);
  } catch (const TemplateError& e) {
    // Errors outside any expression or statement (rare: the top level has no position).
    throw Error(
        e.kind() == ErrorKind::kLimit ? ErrorCode::kResourceExhausted : ErrorCode::kInvalidArgument,
        fmt::format("chat template error: {}", e.what()));
  }
}

namespace {

nlohmann::ordered_json message_json(const ChatMessage& m) {
  nlohmann::ordered_json msg = nlohmann::ordered_json::object();
  msg["role"] = m.role;
  msg["content"] = m.content;
  if (m.extra.is_object()) {
    for (const auto& [key, value] : m.extra.items()) {
      if (value.is_null()) {
        msg.erase(key);
      } else {
        msg[key] = value;
      }
    }
  }
  // transformers fills reasoning_content (and thinking) from whichever reasoning field is set.
  for (const char* field : {"reasoning_content", "thinking", "reasoning"}) {
    if (!msg.contains(field)) continue;
    const nlohmann::ordered_json reasoning = msg[field];
    nlohmann::ordered_json aliased = nlohmann::ordered_json::object();
    aliased["thinking"] = reasoning;
    for (const auto& [key, value] : msg.items()) aliased[key] = value;
    aliased["reasoning_content"] = reasoning;
    return aliased;
  }
  return msg;
}

}  // namespace

std::string apply_chat_template(const ChatTemplate& t, const std::vector<ChatMessage>& messages,
                                bool add_generation_prompt, const std::string& bos_token,
                                const std::string& eos_token, const nlohmann::ordered_json& extra) {
  nlohmann::ordered_json context = nlohmann::ordered_json::object();
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const ChatMessage& m : messages) list.push_back(message_json(m));
  context["messages"] = std::move(list);
  context["tools"] = nullptr;
  context["documents"] = nullptr;
  context["add_generation_prompt"] = add_generation_prompt;
  context["bos_token"] = bos_token;
  context["eos_token"] = eos_token;
  if (extra.is_object()) {
    for (const auto& [key, value] : extra.items()) context[key] = value;
  }
  return t.render(context);
}

}  // namespace macserve::chat
