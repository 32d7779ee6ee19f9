#include "string_format.h"

#include <algorithm>
#include <cmath>

#include "interpreter.h"
#include "py_format.h"
#include "template_error.h"
#include "unicode.h"

namespace macserve::chat {
namespace {

struct PercentSpec {
  bool left = false;
  bool plus = false;
  bool space = false;
  bool alt = false;
  bool zero = false;
  int64_t width = 0;
  int64_t precision = -1;
};

// Widths and precisions allocate what they ask for: refuse those past the text limit up front.
void check_width(int64_t n, size_t max_bytes) {
  if (n > 0 && static_cast<uint64_t>(n) > max_bytes) {
    raise(ErrorKind::kLimit, "a format width of {} exceeds the {} byte limit", n, max_bytes);
  }
}

std::string pad(std::string s, int64_t width, char align, char fill) {
  const auto len = static_cast<int64_t>(utf8_length(s));
  if (width <= len) return s;
  const auto n = static_cast<size_t>(width - len);
  if (align == '<') return s + std::string(n, fill);
  if (align == '^') return std::string(n / 2, fill) + s + std::string(n - n / 2, fill);
  return std::string(n, fill) + s;
}

std::string truncate_chars(const std::string& s, int64_t precision) {
  if (precision < 0) return s;
  size_t pos = 0;
  for (int64_t k = 0; k < precision && pos < s.size(); ++k) pos += utf8_char_len(s, pos);
  return s.substr(0, pos);
}

std::string fmt_number(const std::string& spec, const Value& v, bool as_int) {
  try {
    if (as_int) return fmt::format(fmt::runtime("{:" + spec + "}"), v.as_int());
    return fmt::format(fmt::runtime("{:" + spec + "}"), v.as_float());
  } catch (const fmt::format_error& e) {
    raise(ErrorKind::kValueError, "invalid format spec '{}': {}", spec, e.what());
  }
}

std::string percent_number(char conv, const Value& arg, const PercentSpec& s) {
  const bool int_conv =
      conv == 'd' || conv == 'i' || conv == 'u' || conv == 'x' || conv == 'X' || conv == 'o';
  if (!arg.is_number()) {
    raise(ErrorKind::kTypeError, "%{} format: a real number is required, not {}", conv,
          type_name(arg));
  }
  if ((conv == 'x' || conv == 'X' || conv == 'o') && arg.is_float()) {
    raise(ErrorKind::kTypeError, "%{} format: an integer is required, not float", conv);
  }
  std::string spec;
  if (s.left) spec += '<';
  if (s.plus)
    spec += '+';
  else if (s.space)
    spec += ' ';
  if (s.alt) spec += '#';
  if (s.zero && !s.left) spec += '0';
  if (s.width > 0) spec += std::to_string(s.width);
  if (!int_conv && s.precision >= 0) {
    spec += '.';
    spec += std::to_string(s.precision);
  }
  if (int_conv) {
    if (arg.is_float() && !(std::fabs(arg.as_float()) < 9.2e18)) {
      raise(ErrorKind::kOverflowError, "%{} of {} does not fit in 64 bits", conv,
            py_float_repr(arg.as_float()));
    }
    const Value i = arg.is_float() ? Value::integer(static_cast<int64_t>(arg.as_float())) : arg;
    spec += conv == 'i' || conv == 'u' ? 'd' : conv;
    return fmt_number(spec, i, true);
  }
  spec += conv;
  return fmt_number(spec, arg, false);
}

std::string percent_one(char conv, const Value& arg, const PercentSpec& s) {
  if (conv == 's' || conv == 'r' || conv == 'a') {
    const std::string text = conv == 's' ? py_str(arg) : py_repr(arg);
    return pad(truncate_chars(text, s.precision), s.width, s.left ? '<' : '>', ' ');
  }
  if (conv == 'c') {
    std::string ch;
    if (arg.is_integral() && arg.as_int() >= 0 && arg.as_int() <= 0x10FFFF) {
      utf8_append(ch, static_cast<char32_t>(arg.as_int()));
    } else if (arg.is_string() && utf8_length(arg.as_string()) == 1) {
      ch = arg.as_string();
    } else {
      raise(ErrorKind::kTypeError, "%c requires int or char");
    }
    return pad(ch, s.width, s.left ? '<' : '>', ' ');
  }
  return percent_number(conv, arg, s);
}

size_t parse_percent_spec(const std::string& f, size_t i, PercentSpec& s) {
  for (; i < f.size(); ++i) {
    const char c = f[i];
    if (c == '-')
      s.left = true;
    else if (c == '+')
      s.plus = true;
    else if (c == ' ')
      s.space = true;
    else if (c == '#')
      s.alt = true;
    else if (c == '0')
      s.zero = true;
    else
      break;
  }
  constexpr int64_t kCap = int64_t{1} << 40;  // larger values fail check_width anyway
  while (i < f.size() && f[i] >= '0' && f[i] <= '9') {
    s.width = std::min<int64_t>(s.width * 10 + (f[i++] - '0'), kCap);
  }
  if (i < f.size() && f[i] == '.') {
    s.precision = 0;
    ++i;
    while (i < f.size() && f[i] >= '0' && f[i] <= '9') {
      s.precision = std::min<int64_t>(s.precision * 10 + (f[i++] - '0'), kCap);
    }
  }
  while (i < f.size() && (f[i] == 'h' || f[i] == 'l' || f[i] == 'L')) ++i;
  return i;
}

}  // namespace

std::string percent_format(Interpreter& interp, const std::string& f, const Value& args) {
  const bool is_tuple = args.is_list() && args.as_list().is_tuple;
  const std::vector<Value> single{args};
  const std::vector<Value>& positional = is_tuple ? args.as_list().items : single;
  const DictData* mapping = args.is_dict() ? &args.as_dict() : nullptr;
  size_t next_arg = 0;
  std::string out;
  for (size_t i = 0; i < f.size();) {
    if (f[i] != '%') {
      out.push_back(f[i++]);
      continue;
    }
    if (++i >= f.size()) raise(ErrorKind::kValueError, "incomplete format");
    const Value* arg = nullptr;
    if (f[i] == '(') {
      const size_t close = f.find(')', i);
      if (close == std::string::npos) raise(ErrorKind::kValueError, "incomplete format key");
      if (mapping == nullptr) raise(ErrorKind::kTypeError, "format requires a mapping");
      arg = mapping->find(std::string_view(f).substr(i + 1, close - i - 1));
      if (arg == nullptr)
        raise(ErrorKind::kValueError, "KeyError: '{}'", f.substr(i + 1, close - i - 1));
      i = close + 1;
    }
    PercentSpec spec;
    i = parse_percent_spec(f, i, spec);
    check_width(spec.width, interp.max_bytes());
    check_width(spec.precision, interp.max_bytes());
    if (i >= f.size()) raise(ErrorKind::kValueError, "incomplete format");
    const char conv = f[i++];
    if (conv == '%') {
      out.push_back('%');
      continue;
    }
    if (std::string_view("sradiuxXoeEfFgGc").find(conv) == std::string_view::npos) {
      raise(ErrorKind::kValueError, "unsupported format character '{}' (0x{:x}) at index {}", conv,
            static_cast<unsigned char>(conv), i - 1);
    }
    if (arg == nullptr) {
      if (next_arg >= positional.size()) {
        raise(ErrorKind::kTypeError, "not enough arguments for format string");
      }
      arg = &positional[next_arg++];
    }
    out += percent_one(conv, *arg, spec);
    interp.check_size(out.size());
  }
  // Python skips this check for arguments with __getitem__ (lists and dicts), not for tuples.
  const bool mapping_like = !is_tuple && (args.is_list() || args.is_dict());
  if (!mapping_like && next_arg < positional.size()) {
    raise(ErrorKind::kTypeError, "not all arguments converted during string formatting");
  }
  return out;
}

namespace {

// Every number in a spec is a width or a precision; each must fit the text limit.
void check_spec_numbers(const std::string& spec, size_t max_bytes) {
  for (size_t i = 0; i < spec.size();) {
    if (spec[i] < '0' || spec[i] > '9') {
      ++i;
      continue;
    }
    int64_t n = 0;
    for (; i < spec.size() && spec[i] >= '0' && spec[i] <= '9'; ++i) {
      n = std::min<int64_t>(n * 10 + (spec[i] - '0'), int64_t{1} << 40);
    }
    check_width(n, max_bytes);
  }
}

std::string format_string_spec(const std::string& value, const std::string& spec, size_t i,
                               char align, char fill) {
  const char type = spec.back();
  if (!(type == 's' || (type >= '0' && type <= '9') || type == '<' || type == '>' || type == '^' ||
        spec.find('.') != std::string::npos)) {
    raise(ErrorKind::kValueError, "Unknown format code '{}' for object of type 'str'", type);
  }
  std::string rest = spec.substr(i);
  if (!rest.empty() && rest.back() == 's') rest.pop_back();
  const size_t dot = rest.find('.');
  const int64_t width = dot == 0 || rest.empty() ? 0 : std::atoll(rest.substr(0, dot).c_str());
  const int64_t precision = dot == std::string::npos ? -1 : std::atoll(rest.c_str() + dot + 1);
  return pad(truncate_chars(value, precision), width, align ? align : '<', fill);
}

}  // namespace

std::string format_with_spec(const Value& value, const std::string& spec, size_t max_bytes) {
  if (spec.empty()) return py_str(value, max_bytes);
  check_spec_numbers(spec, max_bytes);
  if (spec.find_first_of(",_") != std::string::npos) {
    raise(ErrorKind::kValueError, "format spec '{}' is not supported", spec);
  }
  // [[fill]align] prefix, shared by all types.
  size_t i = 0;
  char fill = ' ';
  char align = '\0';
  const auto is_align = [](char c) { return c == '<' || c == '>' || c == '^' || c == '='; };
  if (spec.size() >= 2 && is_align(spec[1])) {
    fill = spec[0];
    align = spec[1];
    i = 2;
  } else if (is_align(spec[0])) {
    align = spec[0];
    i = 1;
  }
  const char type = spec.back();
  if (value.is_string()) return format_string_spec(value.as_string(), spec, i, align, fill);
  if (!value.is_number()) {
    raise(ErrorKind::kTypeError, "unsupported format string passed to {}.__format__",
          type_name(value));
  }
  const bool float_type = std::string_view("eEfFgG%").find(type) != std::string_view::npos;
  if (value.is_integral() && !float_type) {
    std::string s = spec;
    if (type == 'n') s.back() = 'd';
    return fmt_number(s, value, true);
  }
  if (type == '%') {
    std::string s = spec;
    s.back() = 'f';
    return fmt_number(s, Value::real(value.as_float() * 100), false) + "%";
  }
  if (!float_type && spec.find('.') == std::string::npos) {
    const std::string rest = spec.substr(i);
    const int64_t width = rest.empty() ? 0 : std::atoll(rest.c_str());
    return pad(py_float_repr(value.as_float()), width, align ? align : '>', fill);
  }
  return fmt_number(float_type ? spec : spec + "g", value, false);
}

namespace {

bool all_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char d) { return d >= '0' && d <= '9'; });
}

// Resolves a replacement field name: "", "0", "name", then .attr and [key] accessors.
Value resolve_field(Interpreter& interp, const std::string& field, const Arguments& args,
                    size_t& auto_index) {
  const size_t name_end = std::min(field.find('.'), field.find('['));
  const std::string name = field.substr(0, name_end);
  Value value;
  if (name.empty() || all_digits(name)) {
    const size_t index = name.empty() ? auto_index++ : std::stoul(name.substr(0, 9));
    if (index >= args.positional.size()) {
      raise(ErrorKind::kValueError, "Replacement index {} out of range for positional args tuple",
            index);
    }
    value = args.positional[index];
  } else {
    const auto it = std::find_if(args.keyword.begin(), args.keyword.end(),
                                 [&](const auto& kv) { return kv.first == name; });
    if (it == args.keyword.end()) raise(ErrorKind::kValueError, "KeyError: '{}'", name);
    value = it->second;
  }
  for (size_t p = name_end; p < field.size();) {
    if (field[p] == '.') {
      const size_t e = std::min(field.find('.', p + 1), field.find('[', p + 1));
      value = get_attribute(value, field.substr(p + 1, e - p - 1));
      p = e;
      continue;
    }
    const size_t e = field.find(']', p);
    if (e == std::string::npos) raise(ErrorKind::kValueError, "Missing ']' in format string");
    const std::string key = field.substr(p + 1, e - p - 1);
    value = get_item(
        interp, value,
        all_digits(key) ? Value::integer(std::stoll(key.substr(0, 18))) : Value::string(key));
    p = e + 1;
  }
  return value;
}

}  // namespace

std::string brace_format(Interpreter& interp, const std::string& f, const Arguments& args) {
  std::string out;
  size_t auto_index = 0;
  for (size_t i = 0; i < f.size();) {
    const char c = f[i];
    if ((c == '{' || c == '}') && i + 1 < f.size() && f[i + 1] == c) {
      out.push_back(c);
      i += 2;
      continue;
    }
    if (c == '}') raise(ErrorKind::kValueError, "Single '}}' encountered in format string");
    if (c != '{') {
      out.push_back(c);
      ++i;
      continue;
    }
    const size_t close = f.find('}', i);
    if (close == std::string::npos)
      raise(ErrorKind::kValueError, "expected '}}' before end of string");
    std::string field = f.substr(i + 1, close - i - 1);
    if (field.find('{') != std::string::npos) {
      raise(ErrorKind::kValueError, "nested replacement fields are not supported");
    }
    i = close + 1;
    std::string spec;
    if (const size_t colon = field.find(':'); colon != std::string::npos) {
      spec = field.substr(colon + 1);
      field.resize(colon);
    }
    char conversion = '\0';
    if (const size_t bang = field.find('!'); bang != std::string::npos) {
      conversion = bang + 1 < field.size() ? field[bang + 1] : '?';
      field.resize(bang);
    }
    Value value = resolve_field(interp, field, args, auto_index);
    if (conversion == 'r' || conversion == 'a') {
      value = Value::string(py_repr(value));
    } else if (conversion == 's') {
      value = Value::string(py_str(value));
    } else if (conversion != '\0') {
      raise(ErrorKind::kValueError, "Unknown conversion specifier {}", conversion);
    }
    out += format_with_spec(value, spec, interp.max_bytes());
    interp.check_size(out.size());
  }
  return out;
}

}  // namespace macserve::chat
