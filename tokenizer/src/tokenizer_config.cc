#include "tokenizer_config.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "macserve/core/error.h"

namespace macserve::tokenizer {

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw_error(ErrorCode::kNotFound, "{}: cannot open the file", path);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

namespace {

using nlohmann::json;

std::optional<std::string> token_string(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string())
    return v["content"].get<std::string>();
  return std::nullopt;  // null, or a shape no tokenizer uses: no such token
}

std::string chat_template_of(const json& v, const std::string& path) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return {};
  if (!v.is_array())
    throw_error(ErrorCode::kInvalidModel, "{}: chat_template is neither a string nor a list", path);
  std::string first;
  for (const auto& t : v) {
    if (!t.is_object() || !t.contains("template") || !t["template"].is_string())
      throw_error(ErrorCode::kInvalidModel,
                  "{}: chat_template list entries need a \"template\" string", path);
    const std::string name = t.value("name", std::string());
    if (name == "default") return t["template"].get<std::string>();
    if (first.empty()) first = t["template"].get<std::string>();
  }
  return first;  // no "default": the first one
}

}  // namespace

TokenizerConfig read_tokenizer_config(const std::string& dir) {
  TokenizerConfig cfg;
  const std::string path = (std::filesystem::path(dir) / "tokenizer_config.json").string();
  if (std::filesystem::exists(path)) {
    json j;
    try {
      j = json::parse(read_file(path));
    } catch (const json::exception& e) {
      throw_error(ErrorCode::kInvalidModel, "{}: not valid JSON: {}", path, e.what());
    }
    if (!j.is_object()) throw_error(ErrorCode::kInvalidModel, "{}: expected a JSON object", path);
    if (j.contains("chat_template")) cfg.chat_template = chat_template_of(j["chat_template"], path);
    if (j.contains("bos_token")) cfg.bos_token = token_string(j["bos_token"]);
    if (j.contains("eos_token")) cfg.eos_token = token_string(j["eos_token"]);
    if (j.contains("add_bos_token") && j["add_bos_token"].is_boolean())
      cfg.add_bos_token = j["add_bos_token"].get<bool>();
    if (j.contains("add_eos_token") && j["add_eos_token"].is_boolean())
      cfg.add_eos_token = j["add_eos_token"].get<bool>();
  }
  // Newer transformers versions save the template in its own file.
  const std::string jinja = (std::filesystem::path(dir) / "chat_template.jinja").string();
  if (cfg.chat_template.empty() && std::filesystem::exists(jinja))
    cfg.chat_template = read_file(jinja);
  return cfg;
}

}  // namespace macserve::tokenizer
