// Request ids, header lookup and the OpenAI error body.
#include "server/http/request_id.h"

#include <nlohmann/json.hpp>
#include <set>

#include "gtest/gtest.h"
#include "server/http/http_types.h"
#include "server/http/response_writer.h"

namespace tessera::http {
namespace {

TEST(RequestIdTest, SanitizingKeepsSafeCharactersAndCapsLength) {
  EXPECT_EQ(SanitizeRequestId("abc-DEF_1.2:3"), "abc-DEF_1.2:3");
  EXPECT_EQ(SanitizeRequestId("a\r\nX-Evil: 1"), "aX-Evil:1");
  EXPECT_EQ(SanitizeRequestId(std::string(500, 'z')).size(), kMaxRequestIdLength);
  EXPECT_EQ(SanitizeRequestId("<>\"' "), "");
}

TEST(RequestIdTest, ResolveFallsBackToFreshHexIds) {
  EXPECT_EQ(ResolveRequestId("given"), "given");
  std::set<std::string> seen;
  for (int i = 0; i < 100; ++i) {
    std::string id = ResolveRequestId("<<>>");
    ASSERT_EQ(id.size(), 32u);
    EXPECT_EQ(id.find_first_not_of("0123456789abcdef"), std::string::npos) << id;
    seen.insert(id);
  }
  EXPECT_EQ(seen.size(), 100u);
}

TEST(HttpHeadersTest, LookupIgnoresCase) {
  HttpHeaders headers;
  headers.Add("Content-Type", "application/json");
  headers.Add("X-Twice", "first");
  headers.Add("x-twice", "second");
  EXPECT_EQ(headers.Get("content-type"), "application/json");
  EXPECT_EQ(headers.Get("X-TWICE"), "first");
  EXPECT_EQ(headers.Get("missing", "fallback"), "fallback");
  EXPECT_FALSE(headers.Has("missing"));
  EXPECT_EQ(headers.size(), 3u);
}

TEST(JsonErrorTest, BodyHasOpenAiShape) {
  nlohmann::json body =
      nlohmann::json::parse(JsonErrorBody(400, "bad \"x\"", "invalid_request_error"));
  EXPECT_EQ(body["error"]["message"], "bad \"x\"");
  EXPECT_EQ(body["error"]["type"], "invalid_request_error");
  EXPECT_EQ(body["error"]["code"], 400);
  nlohmann::json coded = nlohmann::json::parse(JsonErrorBody(404, "m", "t", "model_not_found"));
  EXPECT_EQ(coded["error"]["code"], "model_not_found");
  // Invalid UTF-8 in a message (it may quote client input) must not break the body.
  EXPECT_FALSE(
      nlohmann::json::parse(JsonErrorBody(400, "\xff\xfe", "t"), nullptr, false).is_discarded());
}

}  // namespace
}  // namespace tessera::http
