#include "macserve/request/request.h"

namespace macserve::engine {

const char* to_string(FinishReason reason) {
  switch (reason) {
    case FinishReason::kNone:
      return "none";
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kAbort:
      return "abort";
    case FinishReason::kError:
      return "error";
  }
  return "none";
}

const char* to_string(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kNone:
      return "none";
    case ErrorKind::kInvalidRequest:
      return "invalid_request";
    case ErrorKind::kContextLength:
      return "context_length_exceeded";
    case ErrorKind::kQueueFull:
      return "queue_full";
    case ErrorKind::kUnavailable:
      return "unavailable";
    case ErrorKind::kInternal:
      return "internal";
  }
  return "none";
}

const char* to_string(SchedulingPolicy policy) {
  switch (policy) {
    case SchedulingPolicy::kFcfs:
      return "fcfs";
    case SchedulingPolicy::kPriority:
      return "priority";
  }
  return "fcfs";
}

bool ResponseStream::next(RequestOutput& out) {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return !queue_.empty() || (done_ && queue_.empty()); });
  if (queue_.empty()) {
    drained_ = true;
    return false;
  }
  out = std::move(queue_.front());
  queue_.pop_front();
  return true;
}

bool ResponseStream::poll(std::vector<RequestOutput>& out) {
  std::lock_guard lock(mu_);
  while (!queue_.empty()) {
    out.push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
  if (done_) drained_ = true;
  return done_;
}

void ResponseStream::set_listener(std::function<void()> listener) {
  std::lock_guard lock(mu_);
  listener_ = std::move(listener);
}

void ResponseStream::cancel() {
  std::lock_guard lock(mu_);
  cancelled_ = true;
}

bool ResponseStream::is_cancelled() const {
  std::lock_guard lock(mu_);
  return cancelled_;
}

void ResponseStream::push(RequestOutput out) {
  std::function<void()> listener;
  {
    std::lock_guard lock(mu_);
    if (done_) return;
    // An error ends the whole request (all n completions) at once.
    if (out.finished && (--remaining_ == 0 || out.finish_reason == FinishReason::kError))
      done_ = true;
    queue_.push_back(std::move(out));
    listener = listener_;
  }
  cv_.notify_all();
  if (listener) listener();
}

}  // namespace macserve::engine
