#include "tokenizer_json_reader.h"

#include "macserve/core/error.h"

namespace macserve::tokenizer {

namespace {

using nlohmann::json;

// SAX handler: builds the DOM like nlohmann's own, except inside model.vocab / model.merges.
class Reader : public json::json_sax_t {
 public:
  explicit Reader(TokenizerJson* out) : out_(out) {}

  bool null() override { return value(json(nullptr)); }
  bool boolean(bool v) override { return value(json(v)); }
  bool number_integer(number_integer_t v) override { return number(v, json(v)); }
  bool number_unsigned(number_unsigned_t v) override {
    return number(static_cast<int64_t>(v), json(v));
  }
  bool number_float(number_float_t v, const string_t&) override { return number(-1, json(v)); }
  bool string(string_t& v) override;
  bool binary(binary_t& v) override { return value(json(v)); }
  bool start_object(std::size_t) override;
  bool key(string_t& k) override;
  bool end_object() override;
  bool start_array(std::size_t) override;
  bool end_array() override;
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
    error_ = e.what();
    return false;
  }
  const std::string& error() const { return error_; }

 private:
  enum class Mode { kDom, kVocab, kMerges, kMergePair };

  bool value(json v);
  bool number(int64_t as_id, json v);
  void open(json container, const std::string& under);
  bool at_model_member(const char* name) const {
    return stack_.size() == 2 && path_.size() == 2 && path_[1] == "model" && key_ == name;
  }

  TokenizerJson* out_;
  Mode mode_ = Mode::kDom;
  std::vector<json*> stack_;  // open DOM containers
  std::vector<std::string>
      path_;         // the key each open container sits under ("" for the root / arrays)
  std::string key_;  // the key of the next value in the innermost object
  std::vector<std::string> pair_;  // a [a, b] merge being read
  std::string error_;
};

bool Reader::value(json v) {
  if (mode_ != Mode::kDom)
    throw_error(ErrorCode::kInvalidModel,
                "model.vocab / model.merges hold an entry of the wrong type");
  if (stack_.empty())
    out_->rest = std::move(v);
  else if (stack_.back()->is_array())
    stack_.back()->push_back(std::move(v));
  else
    (*stack_.back())[key_] = std::move(v);
  return true;
}

bool Reader::number(int64_t as_id, json v) {
  if (mode_ != Mode::kVocab) return value(std::move(v));
  if (as_id < 0 || as_id > INT32_MAX)
    throw_error(ErrorCode::kInvalidModel, "model.vocab: \"{}\" has a bad id", key_);
  out_->vocab.emplace_back(std::move(key_), as_id);
  return true;
}

bool Reader::string(string_t& v) {
  if (mode_ == Mode::kMergePair) {
    pair_.push_back(std::move(v));
    return true;
  }
  if (mode_ != Mode::kMerges) return value(json(std::move(v)));
  const std::size_t space = v.find(' ');
  if (space == std::string::npos || v.find(' ', space + 1) != std::string::npos)
    throw_error(ErrorCode::kInvalidModel, "merge {} \"{}\" is not two tokens", out_->merges.size(),
                v);
  out_->merges.emplace_back(v.substr(0, space), v.substr(space + 1));
  return true;
}

void Reader::open(json container, const std::string& under) {
  value(std::move(container));
  json* top = stack_.empty()              ? &out_->rest
              : stack_.back()->is_array() ? &stack_.back()->back()
                                          : &(*stack_.back())[key_];
  stack_.push_back(top);
  path_.push_back(under);
}

bool Reader::start_object(std::size_t) {
  if (mode_ == Mode::kDom && at_model_member("vocab")) {
    mode_ = Mode::kVocab;
    out_->has_vocab = true;
    return true;
  }
  open(json::object(), stack_.empty() || stack_.back()->is_array() ? "" : key_);
  return true;
}

bool Reader::key(string_t& k) {
  key_ = std::move(k);
  return true;
}

bool Reader::end_object() {
  if (mode_ == Mode::kVocab) {
    mode_ = Mode::kDom;
    return true;
  }
  if (mode_ != Mode::kDom)
    throw_error(ErrorCode::kInvalidModel, "model.merges: an entry is an object");
  stack_.pop_back();
  path_.pop_back();
  return true;
}

bool Reader::start_array(std::size_t) {
  if (mode_ == Mode::kMerges) {
    mode_ = Mode::kMergePair;
    pair_.clear();
    return true;
  }
  if (mode_ == Mode::kDom && at_model_member("merges")) {
    mode_ = Mode::kMerges;
    out_->has_merges = true;
    return true;
  }
  if (mode_ != Mode::kDom)
    throw_error(ErrorCode::kInvalidModel, "model.vocab / model.merges: unexpected array");
  open(json::array(), stack_.empty() || stack_.back()->is_array() ? "" : key_);
  return true;
}

bool Reader::end_array() {
  if (mode_ == Mode::kMergePair) {
    if (pair_.size() != 2)
      throw_error(ErrorCode::kInvalidModel, "merge {} is not a pair of tokens",
                  out_->merges.size());
    out_->merges.emplace_back(std::move(pair_[0]), std::move(pair_[1]));
    mode_ = Mode::kMerges;
    return true;
  }
  if (mode_ == Mode::kMerges) {
    mode_ = Mode::kDom;
    return true;
  }
  stack_.pop_back();
  path_.pop_back();
  return true;
}

}  // namespace

TokenizerJson read_tokenizer_json(const std::string& text) {
  TokenizerJson out;
  Reader reader(&out);
  if (!json::sax_parse(text, &reader))
    throw_error(ErrorCode::kInvalidModel, "not valid JSON: {}", reader.error());
  return out;
}

}  // namespace macserve::tokenizer
