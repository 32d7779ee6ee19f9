#include "model.h"

#include "macserve/core/error.h"

namespace macserve::tokenizer {

void Vocab::reserve(std::size_t n) {
  ids_.reserve(n);
  tokens_.reserve(n);
  has_.reserve(n);
}

void Vocab::add(std::string token, int32_t id) {
  if (id < 0) throw_error(ErrorCode::kInvalidModel, "token '{}' has a negative id {}", token, id);
  // Ids beyond this are almost surely a corrupt file; refusing them keeps memory bounded.
  if (id > (1 << 26))
    throw_error(ErrorCode::kInvalidModel, "token '{}' has an id too large: {}", token, id);
  if (static_cast<std::size_t>(id) >= tokens_.size()) {
    tokens_.resize(static_cast<std::size_t>(id) + 1);
    has_.resize(static_cast<std::size_t>(id) + 1, false);
  }
  if (has_[id])
    throw_error(ErrorCode::kInvalidModel, "id {} is given to both '{}' and '{}'", id, tokens_[id],
                token);
  has_[id] = true;
  tokens_[id] = token;
  ids_.insert_or_assign(std::move(token),
                        id);  // a repeated string: the last id wins (HF, llama.cpp)
}

}  // namespace macserve::tokenizer
