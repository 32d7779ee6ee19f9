#include <filesystem>
#include <fstream>

#include "macserve/core/error.h"
#include "macserve/loadgen/dataset.h"
#include "macserve/models/loader/gguf.h"

namespace macserve::loadgen {

std::unique_ptr<tokenizer::Tokenizer> load_bench_tokenizer(const std::string& path) {
  namespace fs = std::filesystem;
  if (!fs::exists(path))
    throw_error(ErrorCode::kNotFound, "--tokenizer {}: no such file or directory", path);
  bool gguf = fs::path(path).extension() == ".gguf";
  if (!gguf && fs::is_regular_file(path)) {
    char magic[4] = {};
    std::ifstream in(path, std::ios::binary);
    in.read(magic, 4);
    gguf = in.gcount() == 4 && std::string(magic, 4) == "GGUF";
  }
  if (!gguf) return tokenizer::load_tokenizer(path);
  const auto vocab = models::read_gguf_vocab(path);
  if (!vocab)
    throw_error(ErrorCode::kInvalidArgument, "--tokenizer {}: the GGUF file carries no tokenizer",
                path);
  return tokenizer::tokenizer_from_vocab(*vocab);
}

}  // namespace macserve::loadgen
