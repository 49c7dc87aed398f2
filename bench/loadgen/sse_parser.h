// Incremental Server-Sent-Events parser: feed decoded body bytes as they arrive, get the
// data of each complete event.
#pragma once

#include <functional>
#include <string>
#include <string_view>

namespace tessera::loadgen {

class SseParser {
 public:
  using EventCallback = std::function<void(std::string_view data)>;
  explicit SseParser(EventCallback on_event) : on_event_(std::move(on_event)) {}

  // Lines may end in LF, CRLF or CR; a blank line ends an event; multi-line data is joined
  // with '\n'; fields other than "data" are ignored.
  void Feed(std::string_view bytes);

 private:
  void Line(std::string_view line);

  EventCallback on_event_;
  std::string pending_;  // an incomplete line
  std::string data_;
  bool has_data_ = false;
  bool last_was_cr_ = false;
};

}  // namespace tessera::loadgen
