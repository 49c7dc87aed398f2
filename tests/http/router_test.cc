// Route lookup: exact, prefix, 404 versus 405, HEAD falling back to GET.
#include "server/http/router.h"

#include "gtest/gtest.h"

namespace tessera::http {
namespace {

HttpHandler Tagged(std::string* out, std::string tag) {
  return [out, tag](const HttpRequest&, std::shared_ptr<ResponseWriter>) { *out = tag; };
}

// "404", "405" or "handler".
std::string Outcome(const Router& router, std::string_view method, std::string_view path) {
  Router::Match match = router.Find(method, path);
  if (match.handler != nullptr) return "handler";
  return match.path_found ? "405" : "404";
}

TEST(RouterTest, ExactBeatsPrefixAndLongestPrefixWins) {
  std::string hit;
  Router router;
  ASSERT_TRUE(router.Add("GET", "/v1/models", Tagged(&hit, "list")).ok());
  ASSERT_TRUE(router.Add("GET", "/v1/*", Tagged(&hit, "v1")).ok());
  ASSERT_TRUE(router.Add("GET", "/v1/models/*", Tagged(&hit, "model")).ok());
  auto found = [&](std::string_view path) {
    hit.clear();
    Router::Match match = router.Find("GET", path);
    if (match.handler != nullptr) (*match.handler)(HttpRequest{}, nullptr);
    return hit;
  };
  EXPECT_EQ(found("/v1/models"), "list");
  EXPECT_EQ(found("/v1/models/llama"), "model");
  EXPECT_EQ(found("/v1/models/a/b"), "model");
  EXPECT_EQ(found("/v1/other"), "v1");
  EXPECT_EQ(found("/v2/models"), "");
  EXPECT_EQ(found("/v1"), "");
}

TEST(RouterTest, KnownPathWithOtherMethodIsMethodNotAllowed) {
  std::string hit;
  Router router;
  ASSERT_TRUE(router.Add("POST", "/v1/completions", Tagged(&hit, "c")).ok());
  ASSERT_TRUE(router.Add("DELETE", "/v1/completions", Tagged(&hit, "d")).ok());
  Router::Match wrong = router.Find("GET", "/v1/completions");
  EXPECT_EQ(wrong.handler, nullptr);
  EXPECT_TRUE(wrong.path_found);
  EXPECT_EQ(wrong.allowed, (std::vector<std::string>{"DELETE", "POST"}));
  Router::Match missing = router.Find("POST", "/v1/nothing");
  EXPECT_EQ(missing.handler, nullptr);
  EXPECT_FALSE(missing.path_found);
  EXPECT_EQ(Outcome(router, "GET", "/v1/completions"), "405");
  EXPECT_EQ(Outcome(router, "POST", "/nope"), "404");
  EXPECT_EQ(Outcome(router, "DELETE", "/v1/completions"), "handler");
}

TEST(RouterTest, HeadFallsBackToGet) {
  std::string hit;
  Router router;
  ASSERT_TRUE(router.Add("GET", "/health", Tagged(&hit, "get")).ok());
  Router::Match match = router.Find("HEAD", "/health");
  ASSERT_NE(match.handler, nullptr);
  (*match.handler)(HttpRequest{}, nullptr);
  EXPECT_EQ(hit, "get");
}

}  // namespace
}  // namespace tessera::http
