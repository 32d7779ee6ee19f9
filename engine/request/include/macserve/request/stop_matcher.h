// StopMatcher: finds stop strings across token boundaries. It holds back any tail of the text that
// could still become a stop string, so no partial stop string ever reaches the client, and cuts
// the output before the first stop string found.
#pragma once

#include <string>
#include <vector>

namespace macserve::engine {

class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {}

  // Adds new text; returns the text that is safe to emit. Sets stopped() when a stop string
  // matched.
  std::string push(const std::string& delta);
  // The held-back tail, emitted when the request ends for another reason.
  std::string flush();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  bool stopped_ = false;
};

}  // namespace macserve::engine
