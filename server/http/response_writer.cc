// OpenAI-shaped JSON error bodies.
#include "server/http/response_writer.h"

#include <nlohmann/json.hpp>

namespace tessera::http {

std::string JsonErrorBody(int status, std::string_view message, std::string_view type,
                          std::string_view code) {
  nlohmann::json error = {{"message", std::string(message)}, {"type", std::string(type)}};
  if (code.empty()) {
    error["code"] = status;
  } else {
    error["code"] = std::string(code);
  }
  // Replace invalid UTF-8 instead of throwing: messages may quote client input.
  return nlohmann::json{{"error", error}}.dump(-1, ' ', false,
                                               nlohmann::json::error_handler_t::replace);
}

bool WriteJsonError(ResponseWriter& writer, int status, std::string_view message,
                    std::string_view type) {
  return writer.Send(status, "application/json", JsonErrorBody(status, message, type));
}

bool WriteJsonError(const std::shared_ptr<ResponseWriter>& writer, int status,
                    std::string_view message, std::string_view type) {
  return writer != nullptr && WriteJsonError(*writer, status, message, type);
}

}  // namespace tessera::http
