// Text filters. Each converts its input with soft_str first, as Jinja's do.
#include "filters.h"
#include "interpreter.h"
#include "py_format.h"
#include "py_string.h"
#include "string_format.h"
#include "unicode.h"

namespace macserve::chat {
namespace {

// Characters at which Jinja's title filter starts a new word: [-\s({\[<].
bool is_title_break(char32_t cp) {
  return cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<' || is_py_space(cp);
}

std::string slice_chars(const std::string& s, size_t count) {
  size_t pos = 0;
  for (size_t k = 0; k < count && pos < s.size(); ++k) pos += utf8_char_len(s, pos);
  return s.substr(0, pos);
}

}  // namespace

Value filter_capitalize(Interpreter&, const Value& v, Arguments& args) {
  const ArgReader r("capitalize", args, {});
  return Value::string(py_capitalize(soft_str(v)));
}

Value filter_upper(Interpreter&, const Value& v, Arguments& args) {
  const ArgReader r("upper", args, {});
  return Value::string(py_upper(soft_str(v)));
}

Value filter_lower(Interpreter&, const Value& v, Arguments& args) {
  const ArgReader r("lower", args, {});
  return Value::string(py_lower(soft_str(v)));
}

Value filter_center(Interpreter& interp, const Value& v, Arguments& args) {
  const ArgReader r("center", args, {"width"});
  return Value::string(py_pad(soft_str(v), r.get_int(0, 80), " ", '^', interp.max_bytes()));
}

Value filter_escape(Interpreter&, const Value& v, Arguments& args) {
  const ArgReader r("escape", args, {});
  std::string out;
  for (char c : soft_str(v)) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out.push_back(c);
    }
  }
  return Value::string(std::move(out));
}

Value filter_format(Interpreter& interp, const Value& v, Arguments& args) {
  if (!args.positional.empty() && !args.keyword.empty()) {
    raise(ErrorKind::kRuntimeError,
          "can't handle positional and keyword arguments at the same time");
  }
  if (!args.keyword.empty()) {
    auto dict = std::make_shared<DictData>();
    for (const auto& [k, val] : args.keyword) dict->set(Value::string(k), val);
    return Value::string(percent_format(interp, soft_str(v), Value::dict(std::move(dict))));
  }
  return Value::string(percent_format(interp, soft_str(v), Value::list(args.positional, true)));
}

Value filter_indent(Interpreter& interp, const Value& v, Arguments& args) {
  const ArgReader r("indent", args, {"width", "first", "blank"});
  if (v.is_undefined()) raise_undefined(v);
  if (!v.is_string()) {
    raise(ErrorKind::kTypeError, "unsupported operand type(s) for +=: '{}' and 'str'",
          type_name(v));
  }
  const Value width = r.get_or(0, Value::integer(4));
  std::string indention;
  if (width.is_string()) {
    indention = width.as_string();
  } else if (width.is_integral()) {
    interp.check_size(static_cast<size_t>(std::max<int64_t>(0, width.as_int())));
    indention.assign(static_cast<size_t>(std::max<int64_t>(0, width.as_int())), ' ');
  } else {
    raise(ErrorKind::kTypeError, "can't multiply sequence by non-int of type '{}'",
          type_name(width));
  }
  // Jinja appends a newline first so splitlines() keeps a trailing empty line.
  const std::vector<std::string> lines = py_splitlines(v.as_string() + "\n", false);
  interp.check_size(v.as_string().size() + lines.size() * (indention.size() + 1));
  std::string out;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (i > 0) out += "\n";
    const bool indent_line = i > 0 && (r.get_bool(2, false) || !lines[i].empty());
    if (indent_line) out += indention;
    out += lines[i];
  }
  if (r.get_bool(1, false)) out = indention + out;
  return Value::string(std::move(out));
}

Value filter_replace(Interpreter& interp, const Value& v, Arguments& args) {
  const ArgReader r("replace", args, {"old", "new", "count"});
  return Value::string(py_replace(soft_str(v), soft_str(r.get(0)), soft_str(r.get(1)),
                                  r.get_int(2, -1), interp.max_bytes()));
}

Value filter_title(Interpreter&, const Value& v, Arguments& args) {
  const ArgReader r("title", args, {});
  const std::string s = soft_str(v);
  // Jinja splits at runs of break characters and upper-cases the first character of every piece
  // (break runs included, which leaves them unchanged) and lower-cases the rest.
  std::string out;
  for (size_t i = 0; i < s.size();) {
    size_t j = i;
    const bool is_break = is_title_break(utf8_next(s, j));
    size_t end = j;
    while (end < s.size()) {
      size_t k = end;
      if (is_title_break(utf8_next(s, k)) != is_break) break;
      end = k;
    }
    out += py_upper(std::string_view(s).substr(i, j - i));
    out += py_lower(std::string_view(s).substr(j, end - j));
    i = end;
  }
  return Value::string(std::move(out));
}

Value filter_trim(Interpreter&, const Value& v, Arguments& args) {
  const ArgReader r("trim", args, {"chars"});
  std::optional<std::string> chars;
  if (r.has(0) && !r.get(0).is_none()) chars = r.get_string(0, "");
  return Value::string(py_strip(soft_str(v), chars, true, true));
}

Value filter_truncate(Interpreter&, const Value& v, Arguments& args) {
  const ArgReader r("truncate", args, {"length", "killwords", "end", "leeway"});
  if (!v.is_string()) {
    // Jinja takes len() of the value itself; anything short enough comes back unchanged.
    if (length_of(v) <= r.get_int(0, 255) + r.get_int(3, 5)) return v;
    raise(ErrorKind::kTypeError, "truncate needs a string, got {}", type_name(v));
  }
  const std::string& s = v.as_string();
  const int64_t length = r.get_int(0, 255);
  const std::string end = r.get_string(2, "...");
  const int64_t leeway = r.get_int(3, 5);
  const auto end_len = static_cast<int64_t>(utf8_length(end));
  if (length < end_len)
    raise(ErrorKind::kRuntimeError, "expected length >= {}, got {}", end_len, length);
  if (leeway < 0) raise(ErrorKind::kRuntimeError, "expected leeway >= 0, got {}", leeway);
  if (static_cast<int64_t>(utf8_length(s)) <= length + leeway) return Value::string(s);
  const std::string head = slice_chars(s, static_cast<size_t>(length - end_len));
  if (r.get_bool(1, false)) return Value::string(head + end);
  return Value::string(py_split(head, std::string(" "), 1, true)[0] + end);
}

Value filter_wordcount(Interpreter&, const Value& v, Arguments& args) {
  const ArgReader r("wordcount", args, {});
  const std::string s = soft_str(v);
  int64_t words = 0;
  bool in_word = false;
  for (size_t i = 0; i < s.size();) {
    const bool w = is_word_char(utf8_next(s, i));
    if (w && !in_word) ++words;
    in_word = w;
  }
  return Value::integer(words);
}

}  // namespace macserve::chat
