#include "py_format.h"

#include <charconv>
#include <cmath>
#include <limits>

#include "template_error.h"
#include "unicode.h"

namespace macserve::chat {
namespace {

// Appends with a running size check: repr of [big] * n must fail before it allocates n copies.
class Writer {
 public:
  explicit Writer(size_t max_bytes) : max_bytes_(max_bytes) {}
  void put(std::string_view s) {
    if (out_.size() + s.size() > max_bytes_) {
      raise(ErrorKind::kLimit, "text grows past the {} byte limit", max_bytes_);
    }
    out_.append(s);
  }
  void put(char c) { put(std::string_view(&c, 1)); }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
  size_t max_bytes_;
};

void write_repr(Writer& w, const Value& v);

void write_hex_escape(std::string& out, char32_t cp) {
  if (cp < 0x100) {
    out += fmt::format("\\x{:02x}", static_cast<unsigned>(cp));
  } else if (cp < 0x10000) {
    out += fmt::format("\\u{:04x}", static_cast<unsigned>(cp));
  } else {
    out += fmt::format("\\U{:08x}", static_cast<unsigned>(cp));
  }
}

void write_list_repr(Writer& w, const ListData& list) {
  if (list.is_iterator) return w.put("<generator object>");
  w.put(list.is_tuple ? '(' : '[');
  for (size_t i = 0; i < list.items.size(); ++i) {
    if (i > 0) w.put(", ");
    write_repr(w, list.items[i]);
  }
  if (list.is_tuple && list.items.size() == 1) w.put(',');
  w.put(list.is_tuple ? ')' : ']');
}

void write_dict_repr(Writer& w, const DictData& dict) {
  w.put('{');
  bool first = true;
  for (const auto& [k, v] : dict.items()) {
    if (!first) w.put(", ");
    first = false;
    write_repr(w, k);
    w.put(": ");
    write_repr(w, v);
  }
  w.put('}');
}

void write_repr(Writer& w, const Value& v) {
  switch (v.kind()) {
    case ValueKind::kUndefined:
      w.put("Undefined");
      return;
    case ValueKind::kString:
      w.put(py_repr_string(v.as_string()));
      return;
    case ValueKind::kList:
      write_list_repr(w, v.as_list());
      return;
    case ValueKind::kDict:
      write_dict_repr(w, v.as_dict());
      return;
    case ValueKind::kNone:
    case ValueKind::kBool:
    case ValueKind::kInt:
    case ValueKind::kFloat:
    case ValueKind::kObject:
      w.put(py_str(v));
      return;
  }
}

void write_json_string(Writer& w, const std::string& s, bool ensure_ascii) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7F && c != '"' && c != '\\') {
      out.push_back(static_cast<char>(c));
      ++i;
      continue;
    }
    if (c == '"' || c == '\\') {
      out += c == '"' ? "\\\"" : "\\\\";
    } else if (c == '\n' || c == '\r' || c == '\t' || c == '\b' || c == '\f') {
      out += c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t" : c == '\b' ? "\\b" : "\\f";
    } else if (c < 0x20 || (c == 0x7F && ensure_ascii)) {
      out += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
    } else if (!ensure_ascii) {
      const size_t n = utf8_char_len(s, i);
      out.append(s, i, n);
      i += n;
      continue;
    } else {
      const char32_t cp = utf8_next(s, i);
      if (cp >= 0x10000) {
        const char32_t v = cp - 0x10000;
        out += fmt::format("\\u{:04x}\\u{:04x}", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
      } else {
        out += fmt::format("\\u{:04x}", static_cast<unsigned>(cp));
      }
      continue;
    }
    ++i;
  }
  out += '"';
  w.put(out);
}

std::string json_key(const Value& k) {
  switch (k.kind()) {
    case ValueKind::kString:
      return k.as_string();
    case ValueKind::kBool:
      return k.as_bool() ? "true" : "false";
    case ValueKind::kInt:
      return std::to_string(k.as_int());
    case ValueKind::kFloat:
      return py_str(k);
    case ValueKind::kNone:
      return "null";
    case ValueKind::kUndefined:
    case ValueKind::kList:
    case ValueKind::kDict:
    case ValueKind::kObject:
      break;
  }
  raise(ErrorKind::kTypeError, "keys must be str, int, float, bool or None, not {}", type_name(k));
}

class JsonWriter {
 public:
  JsonWriter(const JsonOptions& o, size_t max_bytes) : o_(o), w_(max_bytes) {}
  std::string take() { return w_.take(); }

  void write(const Value& v, int level) {
    switch (v.kind()) {
      case ValueKind::kNone:
        return w_.put("null");
      case ValueKind::kBool:
        return w_.put(v.as_bool() ? "true" : "false");
      case ValueKind::kInt:
        return w_.put(std::to_string(v.as_int()));
      case ValueKind::kFloat:
        return write_float(v.as_float());
      case ValueKind::kString:
        return write_json_string(w_, v.as_string(), o_.ensure_ascii);
      case ValueKind::kList:
        if (v.is_iterator()) break;
        return write_list(v.as_list(), level);
      case ValueKind::kDict:
        return write_dict(v.as_dict(), level);
      case ValueKind::kUndefined:
      case ValueKind::kObject:
        break;
    }
    raise(ErrorKind::kTypeError, "Object of type {} is not JSON serializable", type_name(v));
  }

 private:
  void write_float(double d) {
    if (std::isnan(d)) return w_.put("NaN");
    if (std::isinf(d)) return w_.put(d > 0 ? "Infinity" : "-Infinity");
    w_.put(py_float_repr(d));
  }

  void newline(int level) {
    if (!o_.indent) return;
    w_.put('\n');
    for (int i = 0; i < level; ++i) w_.put(*o_.indent);
  }

  void write_list(const ListData& list, int level) {
    if (list.items.empty()) return w_.put("[]");
    w_.put('[');
    for (size_t i = 0; i < list.items.size(); ++i) {
      if (i > 0) w_.put(o_.item_separator);
      newline(level + 1);
      write(list.items[i], level + 1);
    }
    newline(level);
    w_.put(']');
  }

  void write_dict(const DictData& dict, int level) {
    if (dict.size() == 0) return w_.put("{}");
    std::vector<const std::pair<Value, Value>*> items;
    for (const auto& kv : dict.items()) items.push_back(&kv);
    if (o_.sort_keys) sort_items(items);
    w_.put('{');
    for (size_t i = 0; i < items.size(); ++i) {
      if (i > 0) w_.put(o_.item_separator);
      newline(level + 1);
      write_json_string(w_, json_key(items[i]->first), o_.ensure_ascii);
      w_.put(o_.key_separator);
      write(items[i]->second, level + 1);
    }
    newline(level);
    w_.put('}');
  }

  // Python sorts the original keys (insertion sort is fine: dicts in templates are small, and a
  // stable sort that only uses `<` keeps Python's order for equal keys).
  static void sort_items(std::vector<const std::pair<Value, Value>*>& items) {
    for (size_t i = 1; i < items.size(); ++i) {
      for (size_t j = i; j > 0 && values_less(items[j]->first, items[j - 1]->first); --j) {
        std::swap(items[j], items[j - 1]);
      }
    }
  }

  const JsonOptions& o_;
  Writer w_;
};

}  // namespace

std::string py_float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  const std::string_view sci(buf, static_cast<size_t>(res.ptr - buf));
  // sci looks like "-1.2345e+06": split sign, digits and exponent.
  const size_t e_pos = sci.find('e');
  std::string_view mant = sci.substr(0, e_pos);
  const int exp10 = std::stoi(std::string(sci.substr(e_pos + 1)));
  std::string sign;
  if (!mant.empty() && mant[0] == '-') {
    sign = "-";
    mant.remove_prefix(1);
  }
  std::string digits;
  for (char c : mant) {
    if (c != '.') digits.push_back(c);
  }
  const int n = static_cast<int>(digits.size());
  const int decpt = exp10 + 1;  // position of the decimal point relative to the digits
  if (decpt <= -4 || decpt > 16) {
    std::string out = sign + digits.substr(0, 1);
    if (n > 1) out += "." + digits.substr(1);
    out += fmt::format("e{}{:02d}", exp10 < 0 ? '-' : '+', std::abs(exp10));
    return out;
  }
  if (decpt <= 0) return sign + "0." + std::string(static_cast<size_t>(-decpt), '0') + digits;
  if (decpt >= n) return sign + digits + std::string(static_cast<size_t>(decpt - n), '0') + ".0";
  return sign + digits.substr(0, static_cast<size_t>(decpt)) + "." +
         digits.substr(static_cast<size_t>(decpt));
}

std::string py_repr_string(const std::string& s) {
  const bool has_single = s.find('\'') != std::string::npos;
  const bool has_double = s.find('"') != std::string::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (size_t i = 0; i < s.size();) {
    const size_t start = i;
    const char32_t cp = utf8_next(s, i);
    if (cp == static_cast<char32_t>(quote) || cp == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(cp));
    } else if (cp == '\n') {
      out += "\\n";
    } else if (cp == '\r') {
      out += "\\r";
    } else if (cp == '\t') {
      out += "\\t";
    } else if (!is_printable(cp)) {
      write_hex_escape(out, cp);
    } else {
      out.append(s, start, i - start);
    }
  }
  out.push_back(quote);
  return out;
}

std::string py_str(const Value& v, size_t max_bytes) {
  switch (v.kind()) {
    case ValueKind::kUndefined:
      return {};
    case ValueKind::kNone:
      return "None";
    case ValueKind::kBool:
      return v.as_bool() ? "True" : "False";
    case ValueKind::kInt:
      return std::to_string(v.as_int());
    case ValueKind::kFloat:
      return py_float_repr(v.as_float());
    case ValueKind::kString:
      return v.as_string();
    case ValueKind::kList:
    case ValueKind::kDict:
      return py_repr(v, max_bytes);
    case ValueKind::kObject:
      return v.as_object().repr();
  }
  return {};
}

std::string py_repr(const Value& v, size_t max_bytes) {
  Writer w(max_bytes);
  write_repr(w, v);
  return w.take();
}

std::string py_json_dumps(const Value& v, const JsonOptions& options, size_t max_bytes) {
  JsonWriter w(options, max_bytes);
  w.write(v, 0);
  return w.take();
}

}  // namespace macserve::chat
