// Variable scopes with Jinja's rules: the render context is the root; every for-loop iteration,
// macro call, {% with %}, {% set %} block and {% filter %} body gets a child scope, so a {% set %}
// inside them does not leak out, while {% if %} shares its parent's scope.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "value.h"

namespace macserve::chat {

struct Scope {
  explicit Scope(std::shared_ptr<Scope> parent_scope) : parent(std::move(parent_scope)) {}

  // Walks outwards; a scope holds a handful of names, so a linear scan beats hashing.
  const Value* find(std::string_view name) const {
    for (const Scope* s = this; s != nullptr; s = s->parent.get()) {
      for (const auto& kv : s->vars) {
        if (kv.first == name) return &kv.second;
      }
    }
    return nullptr;
  }

  void set(const std::string& name, Value value) {
    for (auto& kv : vars) {
      if (kv.first == name) {
        kv.second = std::move(value);
        return;
      }
    }
    vars.emplace_back(name, std::move(value));
  }

  std::shared_ptr<Scope> parent;
  std::vector<std::pair<std::string, Value>> vars;
};

using ScopePtr = std::shared_ptr<Scope>;

}  // namespace macserve::chat
