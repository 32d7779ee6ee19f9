#include "value.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "bounds.h"
#include "template_error.h"
#include "unicode.h"

namespace macserve::chat {
namespace {

const std::string kEmpty;

template <typename T>
bool apply_cmp(const T& a, const T& b, CompareOp op) {
  switch (op) {
    case CompareOp::kLt:
      return a < b;
    case CompareOp::kLe:
      return a <= b;
    case CompareOp::kGt:
      return a > b;
    case CompareOp::kGe:
      return a >= b;
  }
  return false;
}

const char* cmp_symbol(CompareOp op) {
  switch (op) {
    case CompareOp::kLt:
      return "<";
    case CompareOp::kLe:
      return "<=";
    case CompareOp::kGt:
      return ">";
    case CompareOp::kGe:
      return ">=";
  }
  return "?";
}

}  // namespace

bool compare_values(const Value& a, const Value& b, CompareOp op) {
  if (a.is_number() && b.is_number()) {
    if (a.is_integral() && b.is_integral()) return apply_cmp(a.as_int(), b.as_int(), op);
    return apply_cmp(a.as_float(), b.as_float(), op);
  }
  if (a.is_string() && b.is_string()) {
    // Byte order of UTF-8 is code point order, which is how Python orders str.
    return apply_cmp(a.as_string().compare(b.as_string()), 0, op);
  }
  if (a.is_sequence() && b.is_sequence() && !a.is_string() && !b.is_string() &&
      a.as_list().is_tuple == b.as_list().is_tuple) {
    const auto& x = a.as_list().items;
    const auto& y = b.as_list().items;
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (!values_equal(x[i], y[i])) return compare_values(x[i], y[i], op);
    }
    return apply_cmp(x.size(), y.size(), op);
  }
  if (a.is_undefined() || b.is_undefined()) {
    raise(ErrorKind::kUndefinedError, "{}",
          a.is_undefined() ? a.undefined_hint() : b.undefined_hint());
  }
  raise(ErrorKind::kTypeError, "'{}' not supported between instances of '{}' and '{}'",
        cmp_symbol(op), type_name(a), type_name(b));
}

Value Value::undefined(std::string hint) {
  return Value(Storage(Undefined{std::make_shared<const std::string>(std::move(hint))}));
}

Value Value::string(std::string s) {
  return Value(Storage(std::make_shared<const std::string>(std::move(s))));
}

Value Value::list(std::vector<Value> items, bool is_tuple) {
  return make_list(std::move(items), is_tuple, false);
}

Value Value::make_list(std::vector<Value> items, bool is_tuple, bool is_iterator) {
  auto data = std::make_shared<ListData>();
  data->is_iterator = is_iterator;
  int depth = 1;
  for (const Value& v : items) depth = std::max(depth, v.depth() + 1);
  if (depth > kMaxValueDepth) {
    raise(ErrorKind::kLimit, "values nest deeper than {} levels", kMaxValueDepth);
  }
  data->items = std::move(items);
  data->is_tuple = is_tuple;
  data->depth = depth;
  return Value(Storage(std::shared_ptr<const ListData>(std::move(data))));
}

Value Value::iterator(std::vector<Value> items) { return make_list(std::move(items), false, true); }

bool Value::is_iterator() const { return is_list() && as_list().is_iterator; }

const std::string& Value::undefined_hint() const {
  const auto& u = std::get<Undefined>(v_);
  return u.hint ? *u.hint : kEmpty;
}

bool Value::truthy() const {
  switch (kind()) {
    case ValueKind::kUndefined:
    case ValueKind::kNone:
      return false;
    case ValueKind::kBool:
      return as_bool();
    case ValueKind::kInt:
      return as_int() != 0;
    case ValueKind::kFloat:
      return as_float() != 0.0;
    case ValueKind::kString:
      return !as_string().empty();
    case ValueKind::kList:
      return as_list().is_iterator || !as_list().items.empty();
    case ValueKind::kDict:
      return as_dict().size() != 0;
    case ValueKind::kObject:
      return true;
  }
  return false;
}

int Value::depth() const {
  if (is_list()) return as_list().depth;
  if (is_dict()) return as_dict().depth();
  return 0;
}

std::string hash_key(const Value& v) {
  switch (v.kind()) {
    case ValueKind::kUndefined:
      return "U";
    case ValueKind::kNone:
      return "N";
    case ValueKind::kBool:
    case ValueKind::kInt:
      return "n:" + std::to_string(v.as_int());
    case ValueKind::kFloat: {
      const double d = v.as_float();
      if (std::isfinite(d) && d == std::trunc(d) && std::fabs(d) < 9.2e18) {
        return "n:" + std::to_string(static_cast<int64_t>(d));
      }
      uint64_t bits = 0;
      std::memcpy(&bits, &d, sizeof bits);
      return "f:" + std::to_string(bits);
    }
    case ValueKind::kString:
      return "s:" + v.as_string();
    case ValueKind::kList: {
      if (v.is_iterator()) return "o:" + std::to_string(reinterpret_cast<uintptr_t>(&v.as_list()));
      if (!v.as_list().is_tuple) raise(ErrorKind::kTypeError, "unhashable type: 'list'");
      std::string key = "t:";
      for (const Value& item : v.as_list().items) {
        const std::string k = hash_key(item);
        key += std::to_string(k.size()) + ":" + k;
      }
      return key;
    }
    case ValueKind::kDict:
      raise(ErrorKind::kTypeError, "unhashable type: 'dict'");
    case ValueKind::kObject:
      return "o:" + std::to_string(reinterpret_cast<uintptr_t>(v.object_ptr().get()));
  }
  return "?";
}

std::optional<size_t> DictData::position(const Value& key) const {
  if (key.is_string()) {
    const std::string& k = key.as_string();
    if (items_.size() <= kScanLimit) {
      for (size_t i = 0; i < items_.size(); ++i) {
        if (items_[i].first.is_string() && items_[i].first.as_string() == k) return i;
      }
      return std::nullopt;
    }
    const auto it = string_index_.find(std::string_view(k));
    return it == string_index_.end() ? std::nullopt : std::optional<size_t>(it->second);
  }
  const std::string h = hash_key(key);  // throws for unhashable keys
  if (items_.size() <= kScanLimit) {
    for (size_t i = 0; i < items_.size(); ++i) {
      if (!items_[i].first.is_string() && values_equal(items_[i].first, key)) return i;
    }
    return std::nullopt;
  }
  const auto it = other_index_.find(h);
  return it == other_index_.end() ? std::nullopt : std::optional<size_t>(it->second);
}

void DictData::index(size_t i) {
  const Value& key = items_[i].first;
  if (key.is_string()) {
    string_index_.emplace(key.as_string(), i);
  } else {
    other_index_.emplace(hash_key(key), i);
  }
}

const Value* DictData::find(const Value& key) const {
  const std::optional<size_t> i = position(key);
  return i ? &items_[*i].second : nullptr;
}

const Value* DictData::find(std::string_view key) const {
  if (items_.size() <= kScanLimit) {
    for (const auto& kv : items_) {
      if (kv.first.is_string() && kv.first.as_string() == key) return &kv.second;
    }
    return nullptr;
  }
  const auto it = string_index_.find(key);
  return it == string_index_.end() ? nullptr : &items_[it->second].second;
}

void DictData::set(Value key, Value value) {
  depth_ = std::max({depth_, key.depth() + 1, value.depth() + 1});
  if (depth_ > kMaxValueDepth) {
    raise(ErrorKind::kLimit, "values nest deeper than {} levels", kMaxValueDepth);
  }
  if (const std::optional<size_t> i = position(key)) {
    items_[*i].second = std::move(value);  // Python keeps the first key's position
    return;
  }
  items_.emplace_back(std::move(key), std::move(value));
  if (items_.size() == kScanLimit + 1) {
    for (size_t i = 0; i < items_.size(); ++i) index(i);
  } else if (items_.size() > kScanLimit + 1) {
    index(items_.size() - 1);
  }
}

Value Object::get_attr(const std::string& name) const {
  return Value::undefined(fmt::format("'{}' object has no attribute '{}'", type_name(), name));
}

Value Object::call(Interpreter& /*interp*/, Arguments& /*args*/) {
  raise(ErrorKind::kTypeError, "'{}' object is not callable", type_name());
}

std::string Object::repr() const { return fmt::format("<{} object>", type_name()); }

bool values_equal(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_integral() && b.is_integral()) return a.as_int() == b.as_int();
    return a.as_float() == b.as_float();
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case ValueKind::kUndefined:
    case ValueKind::kNone:
      return true;
    case ValueKind::kBool:
    case ValueKind::kInt:
    case ValueKind::kFloat:
      return false;  // handled above
    case ValueKind::kString:
      return a.as_string() == b.as_string();
    case ValueKind::kList: {
      const ListData& x = a.as_list();
      const ListData& y = b.as_list();
      if (x.is_iterator || y.is_iterator) return &x == &y;
      if (x.is_tuple != y.is_tuple || x.items.size() != y.items.size()) return false;
      for (size_t i = 0; i < x.items.size(); ++i) {
        if (!values_equal(x.items[i], y.items[i])) return false;
      }
      return true;
    }
    case ValueKind::kDict: {
      const DictData& x = a.as_dict();
      const DictData& y = b.as_dict();
      if (x.size() != y.size()) return false;
      for (const auto& [k, v] : x.items()) {
        const Value* other = y.find(k);
        if (other == nullptr || !values_equal(v, *other)) return false;
      }
      return true;
    }
    case ValueKind::kObject:
      return a.object_ptr() == b.object_ptr();
  }
  return false;
}

bool value_contains(const Value& container, const Value& item) {
  switch (container.kind()) {
    case ValueKind::kString:
      if (!item.is_string()) {
        raise(ErrorKind::kTypeError, "'in <string>' requires string as left operand, not {}",
              type_name(item));
      }
      return container.as_string().find(item.as_string()) != std::string::npos;
    case ValueKind::kList:
      return std::any_of(container.as_list().items.begin(), container.as_list().items.end(),
                         [&](const Value& v) { return values_equal(v, item); });
    case ValueKind::kDict:
      return container.as_dict().find(item) != nullptr;
    case ValueKind::kUndefined:
      return false;
    case ValueKind::kNone:
    case ValueKind::kBool:
    case ValueKind::kInt:
    case ValueKind::kFloat:
    case ValueKind::kObject:
      break;
  }
  raise(ErrorKind::kTypeError, "argument of type '{}' is not iterable", type_name(container));
}

std::string_view type_name(const Value& v) {
  switch (v.kind()) {
    case ValueKind::kUndefined:
      return "Undefined";
    case ValueKind::kNone:
      return "NoneType";
    case ValueKind::kBool:
      return "bool";
    case ValueKind::kInt:
      return "int";
    case ValueKind::kFloat:
      return "float";
    case ValueKind::kString:
      return "str";
    case ValueKind::kList:
      return v.as_list().is_iterator ? "generator" : v.as_list().is_tuple ? "tuple" : "list";
    case ValueKind::kDict:
      return "dict";
    case ValueKind::kObject:
      return v.as_object().type_name();
  }
  return "object";
}

std::vector<Value> iterate(const Value& v) {
  switch (v.kind()) {
    case ValueKind::kUndefined:
      return {};
    case ValueKind::kString: {
      const std::string& s = v.as_string();
      std::vector<Value> out;
      for (size_t i = 0; i < s.size();) {
        const size_t n = utf8_char_len(s, i);
        out.push_back(Value::string(s.substr(i, n)));
        i += n;
      }
      return out;
    }
    case ValueKind::kList:
      return v.as_list().items;
    case ValueKind::kDict: {
      std::vector<Value> keys;
      keys.reserve(v.as_dict().size());
      for (const auto& kv : v.as_dict().items()) keys.push_back(kv.first);
      return keys;
    }
    case ValueKind::kNone:
    case ValueKind::kBool:
    case ValueKind::kInt:
    case ValueKind::kFloat:
    case ValueKind::kObject:
      break;
  }
  raise(ErrorKind::kTypeError, "'{}' object is not iterable", type_name(v));
}

int64_t length_of(const Value& v) {
  switch (v.kind()) {
    case ValueKind::kUndefined:
      return 0;
    case ValueKind::kString:
      return static_cast<int64_t>(utf8_length(v.as_string()));
    case ValueKind::kList:
      if (v.is_iterator()) break;
      return static_cast<int64_t>(v.as_list().items.size());
    case ValueKind::kDict:
      return static_cast<int64_t>(v.as_dict().size());
    case ValueKind::kNone:
    case ValueKind::kBool:
    case ValueKind::kInt:
    case ValueKind::kFloat:
    case ValueKind::kObject:
      break;
  }
  raise(ErrorKind::kTypeError, "object of type '{}' has no len()", type_name(v));
}

}  // namespace macserve::chat
