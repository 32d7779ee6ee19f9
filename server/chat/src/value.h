// Template values: the Python objects a Jinja template sees (undefined, None, bool, int, float,
// str, list/tuple, dict) plus opaque objects (namespace, loop, macro, builtin callables).
// Strings, lists and dicts are immutable and shared, so passing a message around copies a
// pointer; only namespaces (and loop state) mutate, as in Jinja's ImmutableSandboxedEnvironment.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

namespace macserve::chat {

class Value;
class Object;
class Interpreter;
struct ListData;
class DictData;

// Undefined carries the message Jinja's UndefinedError would show when it is used.
struct Undefined {
  std::shared_ptr<const std::string> hint;
};
struct NoneType {};

enum class ValueKind { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kObject };

class Value {
 public:
  Value() = default;  // undefined
  static Value undefined(std::string hint);
  static Value none() { return Value(Storage(NoneType{})); }
  static Value boolean(bool b) { return Value(Storage(b)); }
  static Value integer(int64_t i) { return Value(Storage(i)); }
  static Value real(double d) { return Value(Storage(d)); }
  static Value string(std::string s);
  static Value string(std::shared_ptr<const std::string> s) { return Value(Storage(std::move(s))); }
  static Value list(std::vector<Value> items, bool is_tuple = false);
  // What Jinja's map/select/unique/batch/... return: a Python generator. It iterates like a list
  // but is always truthy, has no len(), cannot be indexed and prints as a generator object.
  static Value iterator(std::vector<Value> items);
  static Value dict(std::shared_ptr<const DictData> d) { return Value(Storage(std::move(d))); }
  static Value object(std::shared_ptr<Object> o) { return Value(Storage(std::move(o))); }

  ValueKind kind() const { return static_cast<ValueKind>(v_.index()); }
  bool is_undefined() const { return kind() == ValueKind::kUndefined; }
  bool is_none() const { return kind() == ValueKind::kNone; }
  bool is_bool() const { return kind() == ValueKind::kBool; }
  bool is_int() const { return kind() == ValueKind::kInt; }
  bool is_float() const { return kind() == ValueKind::kFloat; }
  bool is_string() const { return kind() == ValueKind::kString; }
  bool is_list() const { return kind() == ValueKind::kList; }
  bool is_dict() const { return kind() == ValueKind::kDict; }
  bool is_object() const { return kind() == ValueKind::kObject; }
  bool is_iterator() const;
  // str, list or tuple: what + concatenates, * repeats and [i] indexes.
  bool is_sequence() const { return is_string() || (is_list() && !is_iterator()); }
  // Python's numbers.Number: bool, int and float.
  bool is_number() const { return is_bool() || is_int() || is_float(); }
  // bool and int, which Python treats as integers in arithmetic and indexing.
  bool is_integral() const { return is_bool() || is_int(); }

  bool as_bool() const { return std::get<bool>(v_); }
  int64_t as_int() const { return is_bool() ? (as_bool() ? 1 : 0) : std::get<int64_t>(v_); }
  double as_float() const {
    return is_float() ? std::get<double>(v_) : static_cast<double>(as_int());
  }
  const std::string& as_string() const { return *std::get<std::shared_ptr<const std::string>>(v_); }
  const ListData& as_list() const { return *std::get<std::shared_ptr<const ListData>>(v_); }
  const DictData& as_dict() const { return *std::get<std::shared_ptr<const DictData>>(v_); }
  Object& as_object() const { return *std::get<std::shared_ptr<Object>>(v_); }
  const std::shared_ptr<Object>& object_ptr() const {
    return std::get<std::shared_ptr<Object>>(v_);
  }
  const std::string& undefined_hint() const;

  bool truthy() const;  // Python's bool()
  int depth() const;    // container nesting depth (0 for scalars)

 private:
  using Storage = std::variant<Undefined, NoneType, bool, int64_t, double,
                               std::shared_ptr<const std::string>, std::shared_ptr<const ListData>,
                               std::shared_ptr<const DictData>, std::shared_ptr<Object>>;
  explicit Value(Storage v) : v_(std::move(v)) {}
  static Value make_list(std::vector<Value> items, bool is_tuple, bool is_iterator);
  Storage v_;
};

struct ListData {
  std::vector<Value> items;
  bool is_tuple = false;
  bool is_iterator = false;
  int depth = 1;
};

// An insertion-ordered dict (Python 3.7+ semantics); 1, 1.0 and true are the same key, as in
// Python. Messages and tool schemas have a handful of keys, so small dicts are scanned; larger
// ones get hash indexes (string keys looked up without building a key string).
class DictData {
 public:
  const std::vector<std::pair<Value, Value>>& items() const { return items_; }
  size_t size() const { return items_.size(); }
  const Value* find(const Value& key) const;      // throws TypeError on unhashable keys
  const Value* find(std::string_view key) const;  // string key fast path
  void set(Value key, Value value);               // while building only
  int depth() const { return depth_; }

 private:
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>()(s); }
  };
  static constexpr size_t kScanLimit = 8;
  std::optional<size_t> position(const Value& key) const;
  void index(size_t i);

  std::vector<std::pair<Value, Value>> items_;
  std::unordered_map<std::string, size_t, StringHash, std::equal_to<>> string_index_;
  std::unordered_map<std::string, size_t> other_index_;  // by hash_key()
  int depth_ = 1;
};

// Canonical hash key of a hashable value ("s:..." for str, "n:..." for numbers equal to an
// integer); throws TypeError for lists, dicts and objects, as Python's hash() does.
std::string hash_key(const Value& v);

// Opaque template objects. get_attr returns undefined for names the object lacks.
class Object : public std::enable_shared_from_this<Object> {
 public:
  virtual ~Object() = default;
  virtual std::string_view type_name() const = 0;  // Python type name, for messages
  virtual Value get_attr(const std::string& name) const;
  virtual bool is_callable() const { return false; }
  virtual Value call(Interpreter& interp, struct Arguments& args);
  virtual std::string repr() const;
  // Drops references to other values at the end of a render, breaking reference cycles (a
  // namespace holding itself, a macro holding the scope that holds it).
  virtual void release() {}
};

// Arguments of one call, in Python's shape.
struct Arguments {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
};

// Python semantics used everywhere: ==, <, `in`, and the type name in messages.
enum class CompareOp { kLt, kLe, kGt, kGe };
bool values_equal(const Value& a, const Value& b);
// <, <=, >, >= as Python orders numbers, strings and same-typed sequences; TypeError otherwise.
bool compare_values(const Value& a, const Value& b, CompareOp op);
inline bool values_less(const Value& a, const Value& b) {
  return compare_values(a, b, CompareOp::kLt);
}
bool value_contains(const Value& container, const Value& item);
std::string_view type_name(const Value& v);

// Python's iter(): the items a for loop or a filter walks (dict keys, string characters).
std::vector<Value> iterate(const Value& v);
// Python's len(); throws TypeError for values without one.
int64_t length_of(const Value& v);

}  // namespace macserve::chat
