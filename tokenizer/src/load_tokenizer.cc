#include <filesystem>

#include "hf_tokenizer_json.h"
#include "macserve/core/error.h"
#include "macserve/tokenizer/tokenizer.h"
#include "sentencepiece_tokenizer.h"
#include "tokenizer_config.h"

namespace macserve::tokenizer {

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path) {
  namespace fs = std::filesystem;
  fs::path file;
  fs::path dir;
  if (fs::is_directory(path)) {
    dir = path;
    if (fs::exists(dir / "tokenizer.json"))
      file = dir / "tokenizer.json";
    else if (fs::exists(dir / "tokenizer.model"))
      file = dir / "tokenizer.model";
    else
      throw_error(ErrorCode::kNotFound, "{}: no tokenizer.json or tokenizer.model in the directory",
                  path);
  } else if (fs::exists(path)) {
    file = path;
    dir = file.parent_path();
    if (dir.empty()) dir = ".";
  } else {
    throw_error(ErrorCode::kNotFound, "{}: no such tokenizer file or directory", path);
  }
  const TokenizerConfig config = read_tokenizer_config(dir.string());
  if (file.extension() == ".model") return load_sentencepiece_model(file.string(), config);
  return load_hf_tokenizer_json(file.string(), config);
}

}  // namespace macserve::tokenizer
