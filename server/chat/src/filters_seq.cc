// Sequence filters: selection, mapping, ordering and aggregation over lists, dict keys and the
// characters of strings.
#include <algorithm>
#include <unordered_set>

#include "bounds.h"
#include "filters.h"
#include "interpreter.h"
#include "py_format.h"

namespace macserve::chat {
namespace {

Value list_of(std::vector<Value> items) { return Value::list(std::move(items)); }

// Calls a test by name with extra arguments, as environment.call_test does at run time.
bool run_test(Interpreter& interp, const Value& name, const Value& item,
              const std::vector<Value>& extra, const Arguments& args) {
  if (!name.is_string()) raise(ErrorKind::kRuntimeError, "test name must be a string");
  const TestFn test = find_test(name.as_string());
  if (test == nullptr) raise(ErrorKind::kRuntimeError, "No test named '{}'.", name.as_string());
  Arguments call;
  call.positional = extra;
  call.keyword = args.keyword;
  return test(interp, item, call);
}

// select/reject/selectattr/rejectattr share Jinja's select_or_reject.
Value select_or_reject(Interpreter& interp, const Value& v, const Arguments& args, bool select,
                       bool lookup_attr) {
  if (!v.truthy()) return Value::iterator({});
  std::function<Value(const Value&)> transform = [](const Value& x) { return x; };
  size_t off = 0;
  if (lookup_attr) {
    if (args.positional.empty())
      raise(ErrorKind::kRuntimeError, "Missing parameter for attribute name");
    transform = attribute_getter(interp, args.positional[0]);
    off = 1;
  }
  const bool has_test = args.positional.size() > off;
  const std::vector<Value> extra(
      args.positional.begin() + static_cast<long>(std::min(args.positional.size(), off + 1)),
      args.positional.end());
  std::vector<Value> out;
  for (const Value& item : iterate(v)) {
    const Value x = transform(item);
    const bool passed =
        has_test ? run_test(interp, args.positional[off], x, extra, args) : x.truthy();
    if (passed == select) out.push_back(item);
  }
  return Value::iterator(std::move(out));
}

std::function<Value(const Value&)> key_getter(Interpreter& interp, const ArgReader& r,
                                              size_t case_index, size_t attr_index, bool multi) {
  const bool case_sensitive = r.get_bool(case_index, false);
  const Value attribute = r.get_or(attr_index, Value::none());
  std::vector<std::function<Value(const Value&)>> getters;
  if (multi && attribute.is_string()) {
    for (size_t start = 0;;) {
      const size_t comma = attribute.as_string().find(',', start);
      getters.push_back(attribute_getter(
          interp, Value::string(attribute.as_string().substr(start, comma - start))));
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  } else {
    getters.push_back(attribute_getter(interp, attribute));
  }
  return [getters, case_sensitive, multi, attribute](const Value& item) {
    std::vector<Value> parts;
    for (const auto& g : getters) {
      Value k = g(item);
      parts.push_back(case_sensitive ? k : lower_if_string(k));
    }
    // make_multi_attrgetter returns a list even for one attribute; plain keys compare the same.
    return multi && attribute.is_string() && parts.size() > 1 ? Value::list(std::move(parts))
                                                              : parts[0];
  };
}

Value min_or_max(Interpreter& interp, const Value& v, Arguments& args, bool is_max) {
  const ArgReader r(is_max ? "max" : "min", args, {"case_sensitive", "attribute"});
  const std::vector<Value> items = to_list(v);
  if (items.empty()) return Value::undefined("No aggregated item, sequence was empty.");
  const auto key = key_getter(interp, r, 0, 1, false);
  size_t best = 0;
  Value best_key = key(items[0]);
  for (size_t i = 1; i < items.size(); ++i) {
    Value k = key(items[i]);
    if (compare_values(k, best_key, is_max ? CompareOp::kGt : CompareOp::kLt)) {
      best = i;
      best_key = std::move(k);
    }
  }
  return items[best];
}

}  // namespace

Value filter_batch(Interpreter& interp, const Value& v, Arguments& args) {
  const ArgReader r("batch", args, {"linecount", "fill_with"});
  const int64_t n = r.get_int(0, 0);
  const Value fill = r.get_or(1, Value::none());
  std::vector<Value> out;
  std::vector<Value> tmp;
  for (const Value& item : iterate(v)) {
    if (static_cast<int64_t>(tmp.size()) == n) out.push_back(list_of(std::exchange(tmp, {})));
    tmp.push_back(item);
  }
  if (!tmp.empty()) {
    if (!fill.is_none() && static_cast<int64_t>(tmp.size()) < n) {
      if (n > static_cast<int64_t>(kMaxListItems)) raise(ErrorKind::kLimit, "batch size too large");
      interp.charge(static_cast<uint64_t>(n) / 8);
      tmp.resize(static_cast<size_t>(n), fill);
    }
    out.push_back(list_of(std::move(tmp)));
  }
  return Value::iterator(std::move(out));
}

Value filter_dictsort(Interpreter&, const Value& v, Arguments& args) {
  const ArgReader r("dictsort", args, {"case_sensitive", "by", "reverse"});
  if (!v.is_dict()) raise(ErrorKind::kRuntimeError, "dictsort needs a mapping");
  const std::string by = r.get_string(1, "key");
  if (by != "key" && by != "value") {
    raise(ErrorKind::kRuntimeError, "You can only sort by either \"key\" or \"value\"");
  }
  std::vector<Value> items;
  std::vector<Value> keys;
  for (const auto& [k, val] : v.as_dict().items()) {
    items.push_back(Value::list({k, val}, true));
    const Value& sort_by = by == "key" ? k : val;
    keys.push_back(r.get_bool(0, false) ? sort_by : lower_if_string(sort_by));
  }
  stable_sort(items, keys, r.get_bool(2, false));
  return list_of(std::move(items));
}

Value filter_first(Interpreter&, const Value& v, Arguments& args) {
  const ArgReader r("first", args, {});
  if (v.is_list() && !v.as_list().items.empty()) return v.as_list().items.front();
  const std::vector<Value> items = v.is_list() ? std::vector<Value>{} : iterate(v);
  if (items.empty()) return Value::undefined("No first item, sequence was empty.");
  return items.front();
}

Value filter_last(Interpreter&, const Value& v, Arguments& args) {
  const ArgReader r("last", args, {});
  if (!(v.is_sequence() || v.is_dict() || v.is_undefined())) {
    raise(ErrorKind::kTypeError, "'{}' object is not reversible", type_name(v));
  }
  const std::vector<Value> items = iterate(v);
  if (items.empty()) return Value::undefined("No last item, sequence was empty.");
  return items.back();
}

Value filter_items(Interpreter&, const Value& v, Arguments& args) {
  const ArgReader r("items", args, {});
  if (v.is_undefined()) return Value::iterator({});
  if (!v.is_dict()) raise(ErrorKind::kTypeError, "Can only get item pairs from a mapping.");
  std::vector<Value> out;
  for (const auto& [k, val] : v.as_dict().items()) out.push_back(Value::list({k, val}, true));
  return Value::iterator(std::move(out));
}

Value filter_join(Interpreter& interp, const Value& v, Arguments& args) {
  const ArgReader r("join", args, {"d", "attribute"});
  const std::string sep = soft_str(r.get_or(0, Value::string("")));
  std::vector<Value> items = iterate(v);
  if (r.has(1) && !r.get(1).is_none()) {
    const auto getter = attribute_getter(interp, r.get(1));
    for (Value& item : items) item = getter(item);
  }
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += sep;
    out += py_str(items[i], interp.max_bytes());
    interp.check_size(out.size());
  }
  return Value::string(std::move(out));
}

Value filter_length(Interpreter&, const Value& v, Arguments& args) {
  const ArgReader r("length", args, {});
  return Value::integer(length_of(v));
}

Value filter_list(Interpreter&, const Value& v, Arguments& args) {
  const ArgReader r("list", args, {});
  return list_of(to_list(v));
}

Value filter_map(Interpreter& interp, const Value& v, Arguments& args) {
  if (!v.truthy()) return Value::iterator({});
  std::function<Value(const Value&)> fn;
  const auto attr = std::find_if(args.keyword.begin(), args.keyword.end(),
                                 [](const auto& kw) { return kw.first == "attribute"; });
  if (args.positional.empty() && attr != args.keyword.end()) {
    Value default_value = Value::none();
    for (const auto& [k, val] : args.keyword) {
      if (k == "default")
        default_value = val;
      else if (k != "attribute")
        raise(ErrorKind::kRuntimeError, "Unexpected keyword argument '{}'", k);
    }
    fn = attribute_getter(interp, attr->second, default_value.is_none() ? nullptr : &default_value);
  } else {
    if (args.positional.empty()) raise(ErrorKind::kRuntimeError, "map requires a filter argument");
    const Value& name = args.positional[0];
    const FilterFn f = name.is_string() ? find_filter(name.as_string()) : nullptr;
    if (f == nullptr) raise(ErrorKind::kRuntimeError, "No filter named '{}'.", soft_str(name));
    Arguments rest;
    rest.positional.assign(args.positional.begin() + 1, args.positional.end());
    rest.keyword = args.keyword;
    fn = [&interp, f, rest](const Value& item) mutable { return f(interp, item, rest); };
  }
  std::vector<Value> out;
  for (const Value& item : iterate(v)) out.push_back(fn(item));
  return Value::iterator(std::move(out));
}

Value filter_max(Interpreter& interp, const Value& v, Arguments& args) {
  return min_or_max(interp, v, args, true);
}

Value filter_min(Interpreter& interp, const Value& v, Arguments& args) {
  return min_or_max(interp, v, args, false);
}

Value filter_select(Interpreter& interp, const Value& v, Arguments& args) {
  return select_or_reject(interp, v, args, true, false);
}

Value filter_reject(Interpreter& interp, const Value& v, Arguments& args) {
  return select_or_reject(interp, v, args, false, false);
}

Value filter_selectattr(Interpreter& interp, const Value& v, Arguments& args) {
  return select_or_reject(interp, v, args, true, true);
}

Value filter_rejectattr(Interpreter& interp, const Value& v, Arguments& args) {
  return select_or_reject(interp, v, args, false, true);
}

Value filter_reverse(Interpreter&, const Value& v, Arguments& args) {
  const ArgReader r("reverse", args, {});
  if (v.is_string()) {
    std::string out;
    for (const Value& ch : iterate(v)) out.insert(0, ch.as_string());
    return Value::string(std::move(out));
  }
  if (!(v.is_list() || v.is_dict() || v.is_undefined())) {
    raise(ErrorKind::kRuntimeError, "argument must be iterable");
  }
  std::vector<Value> items = iterate(v);
  std::reverse(items.begin(), items.end());
  // reversed() of a sequence is an iterator; a generator is listed and reversed instead.
  return v.is_iterator() ? list_of(std::move(items)) : Value::iterator(std::move(items));
}

Value filter_sort(Interpreter& interp, const Value& v, Arguments& args) {
  const ArgReader r("sort", args, {"reverse", "case_sensitive", "attribute"});
  std::vector<Value> items = to_list(v);
  const auto key = key_getter(interp, r, 1, 2, true);
  std::vector<Value> keys;
  keys.reserve(items.size());
  for (const Value& item : items) keys.push_back(key(item));
  interp.charge(items.size());
  stable_sort(items, keys, r.get_bool(0, false));
  return list_of(std::move(items));
}

Value filter_sum(Interpreter& interp, const Value& v, Arguments& args) {
  const ArgReader r("sum", args, {"attribute", "start"});
  Value total = r.get_or(1, Value::integer(0));
  if (total.is_string()) {
    raise(ErrorKind::kTypeError, "sum() can't sum strings [use ''.join(seq) instead]");
  }
  std::vector<Value> items = iterate(v);
  if (r.has(0) && !r.get(0).is_none()) {
    const auto getter = attribute_getter(interp, r.get(0));
    for (Value& item : items) item = getter(item);
  }
  for (const Value& item : items) total = binary_op(interp, BinaryOp::kAdd, total, item);
  return total;
}

Value filter_unique(Interpreter& interp, const Value& v, Arguments& args) {
  const ArgReader r("unique", args, {"case_sensitive", "attribute"});
  const auto key = key_getter(interp, r, 0, 1, false);
  std::unordered_set<std::string> seen;
  std::vector<Value> out;
  for (const Value& item : iterate(v)) {
    if (seen.insert(hash_key(key(item))).second) out.push_back(item);
  }
  return Value::iterator(std::move(out));
}

}  // namespace macserve::chat
