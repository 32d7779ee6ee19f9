// tokenizer.json -> HfPipeline. Supports what the Llama, Qwen, Mistral and SmolLM families use;
// any other component type is refused with an error that names it, never silently approximated.
#include "hf_tokenizer_json.h"

#include <nlohmann/json.hpp>

#include "bpe_model.h"
#include "hf_tokenizer.h"
#include "macserve/core/error.h"
#include "macserve/core/logging.h"
#include "tokenizer_json_reader.h"

namespace macserve::tokenizer {

namespace {

using nlohmann::json;

const json& member(const json& j, const char* key, const char* where) {
  if (!j.is_object() || !j.contains(key))
    throw_error(ErrorCode::kInvalidModel, "{}: missing \"{}\"", where, key);
  return j[key];
}

std::string type_of(const json& j, const char* where) {
  const json& t = member(j, "type", where);
  if (!t.is_string()) throw_error(ErrorCode::kInvalidModel, "{}: \"type\" is not a string", where);
  return t.get<std::string>();
}

[[noreturn]] void unsupported(const char* what, const std::string& type) {
  throw_error(ErrorCode::kUnsupported, "{} type \"{}\" is not supported", what, type);
}

// {"String": s} or {"Regex": r} (Split, Replace).
std::shared_ptr<const Regex> pattern_of(const json& j) {
  const json& p = member(j, "pattern", "pattern");
  if (p.contains("String"))
    return std::make_shared<const Regex>(p["String"].get<std::string>(), true);
  if (p.contains("Regex"))
    return std::make_shared<const Regex>(p["Regex"].get<std::string>(), false);
  throw_error(ErrorCode::kInvalidModel, "pattern needs \"String\" or \"Regex\"");
}

void parse_normalizer(const json& j, std::vector<NormalizerStep>* out) {
  if (j.is_null()) return;
  const std::string type = type_of(j, "normalizer");
  NormalizerStep step;
  if (type == "Sequence") {
    for (const auto& n : member(j, "normalizers", "normalizer")) parse_normalizer(n, out);
    return;
  }
  if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
    step.kind = NormalizerKind::kUnicode;
    step.form = type == "NFC"    ? NormalForm::kNfc
                : type == "NFD"  ? NormalForm::kNfd
                : type == "NFKC" ? NormalForm::kNfkc
                                 : NormalForm::kNfkd;
  } else if (type == "Prepend") {
    step.kind = NormalizerKind::kPrepend;
    step.text = member(j, "prepend", "Prepend").get<std::string>();
  } else if (type == "Replace") {
    step.kind = NormalizerKind::kReplace;
    step.pattern = pattern_of(j);
    step.text = member(j, "content", "Replace").get<std::string>();
  } else if (type == "Strip") {
    step.kind = NormalizerKind::kStrip;
    step.strip_left = j.value("strip_left", true);
    step.strip_right = j.value("strip_right", true);
  } else {
    unsupported("normalizer", type);
  }
  out->push_back(std::move(step));
}

SplitBehavior behavior_of(const std::string& s) {
  if (s == "Removed") return SplitBehavior::kRemoved;
  if (s == "Isolated") return SplitBehavior::kIsolated;
  if (s == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (s == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (s == "Contiguous") return SplitBehavior::kContiguous;
  throw_error(ErrorCode::kInvalidModel, "unknown split behavior \"{}\"", s);
}

PrependScheme prepend_scheme_of(const json& j) {
  if (j.contains("prepend_scheme")) {
    const std::string s = j["prepend_scheme"].get<std::string>();
    if (s == "always") return PrependScheme::kAlways;
    if (s == "first") return PrependScheme::kFirst;
    if (s == "never") return PrependScheme::kNever;
    throw_error(ErrorCode::kInvalidModel, "unknown Metaspace prepend_scheme \"{}\"", s);
  }
  // The older form: add_prefix_space true means "always".
  return j.value("add_prefix_space", true) ? PrependScheme::kAlways : PrependScheme::kNever;
}

void parse_pre_tokenizer(const json& j, std::vector<PreTokenizerStep>* out) {
  if (j.is_null()) return;
  const std::string type = type_of(j, "pre_tokenizer");
  PreTokenizerStep step;
  if (type == "Sequence") {
    for (const auto& p : member(j, "pretokenizers", "pre_tokenizer")) parse_pre_tokenizer(p, out);
    return;
  }
  if (type == "Split") {
    step.regex = pattern_of(j);
    step.behavior = behavior_of(member(j, "behavior", "Split").get<std::string>());
    step.invert = j.value("invert", false);
  } else if (type == "ByteLevel") {
    step.kind = PreTokenizerKind::kByteLevel;
    step.add_prefix_space = j.value("add_prefix_space", true);
    step.use_regex = j.value("use_regex", true);
  } else if (type == "Digits") {
    const bool individual = j.value("individual_digits", false);
    step.regex =
        std::make_shared<const Regex>(std::string(kRustNumericClass) + (individual ? "" : "+"));
    step.behavior = individual ? SplitBehavior::kIsolated : SplitBehavior::kContiguous;
  } else if (type == "Metaspace") {
    step.kind = PreTokenizerKind::kMetaspace;
    step.replacement = j.value("replacement", std::string("\xE2\x96\x81"));
    step.prepend_scheme = prepend_scheme_of(j);
    step.split = j.value("split", true);
    step.regex = std::make_shared<const Regex>(step.replacement, true);
  } else {
    unsupported("pre_tokenizer", type);
  }
  out->push_back(std::move(step));
}

void parse_decoder(const json& j, std::vector<DecoderStep>* out) {
  const std::string type = type_of(j, "decoder");
  DecoderStep step;
  if (type == "Sequence") {
    for (const auto& d : member(j, "decoders", "decoder")) parse_decoder(d, out);
    return;
  }
  if (type == "ByteLevel") {
    step.kind = DecoderKind::kByteLevel;
  } else if (type == "Replace") {
    step.kind = DecoderKind::kReplace;
    step.pattern = pattern_of(j);
    step.content = member(j, "content", "Replace").get<std::string>();
  } else if (type == "ByteFallback") {
    step.kind = DecoderKind::kByteFallback;
  } else if (type == "Fuse") {
    step.kind = DecoderKind::kFuse;
  } else if (type == "Strip") {
    step.kind = DecoderKind::kStrip;
    step.content = member(j, "content", "Strip").get<std::string>();
    step.start = j.value("start", std::size_t{0});
    step.stop = j.value("stop", std::size_t{0});
  } else if (type == "Metaspace") {
    step.kind = DecoderKind::kMetaspace;
    step.content = j.value("replacement", std::string("\xE2\x96\x81"));
    step.prepend_scheme = prepend_scheme_of(j);
  } else {
    unsupported("decoder", type);
  }
  out->push_back(std::move(step));
}

int32_t special_id(const json& entry) {  // RobertaProcessing / BertProcessing: ["<s>", 0]
  if (!entry.is_array() || entry.size() != 2)
    throw_error(ErrorCode::kInvalidModel, "bad cls/sep entry");
  return entry[1].get<int32_t>();
}

// Template "single": the ids of the special tokens before and after $A.
void parse_template(const json& j, std::vector<int32_t>* prefix, std::vector<int32_t>* suffix) {
  const json& specials = j.contains("special_tokens") ? j["special_tokens"] : json::object();
  bool after = false;
  for (const auto& item : member(j, "single", "TemplateProcessing")) {
    if (item.contains("Sequence")) {
      after = true;
      continue;
    }
    const std::string name =
        member(member(item, "SpecialToken", "template item"), "id", "SpecialToken")
            .get<std::string>();
    if (!specials.contains(name))
      throw_error(ErrorCode::kInvalidModel,
                  "template special token \"{}\" is not in special_tokens", name);
    for (const auto& id : member(specials[name], "ids", "special token"))
      (after ? suffix : prefix)->push_back(id.get<int32_t>());
  }
}

// Post-processors wrap what came before them: prefix = new + old, suffix = old + new.
void parse_post_processor(const json& j, HfPipeline* p) {
  const std::string type = type_of(j, "post_processor");
  std::vector<int32_t> prefix;
  std::vector<int32_t> suffix;
  if (type == "Sequence") {
    for (const auto& q : member(j, "processors", "post_processor")) parse_post_processor(q, p);
    return;
  }
  if (type == "TemplateProcessing") {
    parse_template(j, &prefix, &suffix);
  } else if (type == "RobertaProcessing" || type == "BertProcessing") {
    prefix.push_back(special_id(member(j, "cls", "post_processor")));
    suffix.push_back(special_id(member(j, "sep", "post_processor")));
  } else if (type != "ByteLevel") {  // ByteLevel only trims offsets: no ids
    unsupported("post_processor", type);
  }
  p->prefix_ids.insert(p->prefix_ids.begin(), prefix.begin(), prefix.end());
  p->suffix_ids.insert(p->suffix_ids.end(), suffix.begin(), suffix.end());
}

std::string optional_string(const json& j, const char* key) {
  return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : std::string();
}

std::unique_ptr<Model> parse_model(const json& j, TokenizerJson* doc) {
  const std::string type = j.contains("type") ? type_of(j, "model") : std::string("BPE");
  if (type != "BPE") unsupported("model", type);
  if (!doc->has_vocab) throw_error(ErrorCode::kInvalidModel, "model: missing \"vocab\" object");
  if (!doc->has_merges) throw_error(ErrorCode::kInvalidModel, "model: missing \"merges\" list");
  Vocab vocab;
  vocab.reserve(doc->vocab.size());
  for (auto& [token, id] : doc->vocab) vocab.add(std::move(token), static_cast<int32_t>(id));
  BpeOptions o;
  o.unk_token = optional_string(j, "unk_token");
  o.byte_fallback = j.value("byte_fallback", false);
  o.fuse_unk = j.value("fuse_unk", false);
  o.ignore_merges = j.value("ignore_merges", false);
  o.continuing_subword_prefix = optional_string(j, "continuing_subword_prefix");
  o.end_of_word_suffix = optional_string(j, "end_of_word_suffix");
  if (j.contains("dropout") && j["dropout"].is_number() && j["dropout"].get<double>() > 0)
    spdlog::warn("tokenizer.json: BPE dropout is ignored (encoding is deterministic)");
  return std::make_unique<BpeModel>(std::move(vocab), doc->merges, std::move(o));
}

void parse_added_tokens(const json& j, AddedVocabulary* added) {
  if (j.is_null()) return;
  for (const auto& t : j) {
    AddedToken a;
    a.id = member(t, "id", "added token").get<int32_t>();
    a.content = member(t, "content", "added token").get<std::string>();
    a.special = t.value("special", false);
    a.lstrip = t.value("lstrip", false);
    a.rstrip = t.value("rstrip", false);
    a.single_word = t.value("single_word", false);
    a.normalized = t.value("normalized", !a.special);
    if (a.id < 0 || a.id > (1 << 26))
      throw_error(ErrorCode::kInvalidModel, "added token \"{}\" has a bad id {}", a.content, a.id);
    added->add(std::move(a));
  }
}

int32_t id_of(const HfPipeline& p, const std::optional<std::string>& token) {
  if (!token) return -1;
  if (const int32_t id = p.added.find(*token); id >= 0) return id;
  return p.model->vocab().find(*token);
}

HfPipeline parse_pipeline(TokenizerJson* doc, const TokenizerConfig& config) {
  HfPipeline p;
  const json& j = doc->rest;
  if (!j.is_object()) throw_error(ErrorCode::kInvalidModel, "expected a JSON object");
  p.model = parse_model(member(j, "model", "tokenizer"), doc);
  if (j.contains("normalizer")) parse_normalizer(j["normalizer"], &p.normalizers);
  if (j.contains("pre_tokenizer")) parse_pre_tokenizer(j["pre_tokenizer"], &p.pre_tokenizers);
  if (j.contains("decoder") && !j["decoder"].is_null()) {
    p.has_decoder = true;
    parse_decoder(j["decoder"], &p.decoders);
  }
  if (j.contains("added_tokens")) parse_added_tokens(j["added_tokens"], &p.added);
  p.bos_id = id_of(p, config.bos_token);
  p.eos_id = id_of(p, config.eos_token);
  if (j.contains("post_processor") && !j["post_processor"].is_null()) {
    parse_post_processor(j["post_processor"], &p);
  } else {  // no post-processor decides: tokenizer_config's add_bos_token / add_eos_token do
    if (config.add_bos_token.value_or(false) && p.bos_id >= 0) p.prefix_ids.push_back(p.bos_id);
    if (config.add_eos_token.value_or(false) && p.eos_id >= 0) p.suffix_ids.push_back(p.eos_id);
  }
  if (p.bos_id < 0 && p.prefix_ids.size() == 1) p.bos_id = p.prefix_ids[0];
  return p;
}

}  // namespace

std::unique_ptr<Tokenizer> load_hf_tokenizer_json(const std::string& path,
                                                  const TokenizerConfig& config) {
  const std::string text = read_file(path);
  try {
    TokenizerJson doc = read_tokenizer_json(text);
    auto tok = std::make_unique<HfTokenizer>(parse_pipeline(&doc, config));
    tok->set_chat_template(config.chat_template);
    return tok;
  } catch (const json::exception& e) {
    throw_error(ErrorCode::kInvalidModel, "{}: malformed tokenizer.json: {}", path, e.what());
  } catch (const Error& e) {
    throw Error(e.code(), fmt::format("{}: {}", path, e.what()));
  }
}

}  // namespace macserve::tokenizer
