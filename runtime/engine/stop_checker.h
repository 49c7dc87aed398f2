// Stop strings over streamed text: finds the first stop string in the generated text and
// holds back the tail that could still become one, so no part of a stop string is ever
// emitted.
#pragma once

#include <string>
#include <vector>

namespace tessera {

class StopStringChecker {
 public:
  explicit StopStringChecker(std::vector<std::string> stops);

  struct Result {
    std::string emit;   // text that is now safe to send
    bool stopped = false;
  };
  // Adds newly detokenized text.
  Result Add(const std::string& delta);
  // At the end of generation: whatever was held back.
  std::string Flush();

 private:
  std::vector<std::string> stops_;
  size_t max_len_ = 0;
  std::string pending_;  // text not yet emitted
  bool stopped_ = false;
};

}  // namespace tessera
