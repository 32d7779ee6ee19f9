// Jinja's built-in filters, split by what they work on: text (filters_text.cc), sequences
// (filters_seq.cc) and conversions (filters.cc, which also holds the name table). Each follows
// jinja2/filters.py of Jinja 3.1, except tojson, which is transformers' override
// (json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "builtins.h"
#include "value.h"

namespace macserve::chat {

// ---- helpers shared by the filter files ----------------------------------------------------
// str() as Jinja's soft_str: undefined prints as "".
std::string soft_str(const Value& v);
// make_attrgetter: "a.b.0" walks attributes/items (digit parts as integers); when default_value
// is given it replaces undefined results.
std::function<Value(const Value&)> attribute_getter(Interpreter& interp, const Value& attribute,
                                                    const Value* default_value = nullptr);
// Stable sort using only `<` (Python's list.sort contract), safe for any comparator outcome.
void stable_sort(std::vector<Value>& items, std::vector<Value>& keys, bool reverse);
Value lower_if_string(const Value& v);       // ignore_case
std::vector<Value> to_list(const Value& v);  // list(v), with undefined as []

// ---- text (filters_text.cc) -------------------------------------------------------------
Value filter_capitalize(Interpreter& interp, const Value& v, Arguments& args);
Value filter_center(Interpreter& interp, const Value& v, Arguments& args);
Value filter_escape(Interpreter& interp, const Value& v, Arguments& args);
Value filter_format(Interpreter& interp, const Value& v, Arguments& args);
Value filter_indent(Interpreter& interp, const Value& v, Arguments& args);
Value filter_lower(Interpreter& interp, const Value& v, Arguments& args);
Value filter_replace(Interpreter& interp, const Value& v, Arguments& args);
Value filter_title(Interpreter& interp, const Value& v, Arguments& args);
Value filter_trim(Interpreter& interp, const Value& v, Arguments& args);
Value filter_truncate(Interpreter& interp, const Value& v, Arguments& args);
Value filter_upper(Interpreter& interp, const Value& v, Arguments& args);
Value filter_wordcount(Interpreter& interp, const Value& v, Arguments& args);

// ---- sequences (filters_seq.cc) ---------------------------------------------------------
Value filter_batch(Interpreter& interp, const Value& v, Arguments& args);
Value filter_dictsort(Interpreter& interp, const Value& v, Arguments& args);
Value filter_first(Interpreter& interp, const Value& v, Arguments& args);
Value filter_items(Interpreter& interp, const Value& v, Arguments& args);
Value filter_join(Interpreter& interp, const Value& v, Arguments& args);
Value filter_last(Interpreter& interp, const Value& v, Arguments& args);
Value filter_length(Interpreter& interp, const Value& v, Arguments& args);
Value filter_list(Interpreter& interp, const Value& v, Arguments& args);
Value filter_map(Interpreter& interp, const Value& v, Arguments& args);
Value filter_max(Interpreter& interp, const Value& v, Arguments& args);
Value filter_min(Interpreter& interp, const Value& v, Arguments& args);
Value filter_reject(Interpreter& interp, const Value& v, Arguments& args);
Value filter_rejectattr(Interpreter& interp, const Value& v, Arguments& args);
Value filter_reverse(Interpreter& interp, const Value& v, Arguments& args);
Value filter_select(Interpreter& interp, const Value& v, Arguments& args);
Value filter_selectattr(Interpreter& interp, const Value& v, Arguments& args);
Value filter_sort(Interpreter& interp, const Value& v, Arguments& args);
Value filter_sum(Interpreter& interp, const Value& v, Arguments& args);
Value filter_unique(Interpreter& interp, const Value& v, Arguments& args);

}  // namespace macserve::chat
