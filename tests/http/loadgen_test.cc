// tessera-loadgen against a fake OpenAI-style SSE endpoint on a real HttpServer: counts,
// concurrency cap, errors; plus its SSE parser and percentile math.
#include <atomic>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "bench/loadgen/latency_stats.h"
#include "bench/loadgen/load_generator.h"
#include "bench/loadgen/sse_parser.h"
#include "gtest/gtest.h"
#include "server/http/http_server.h"
#include "tests/http/server_fixture.h"

namespace tessera::loadgen {
namespace {

using http::HttpRequest;
using http::HttpServer;
using http::ResponseWriter;
using nlohmann::json;

TEST(LatencyStatsTest, PercentilesInterpolateLikeNumpy) {
  EXPECT_DOUBLE_EQ(Percentile({1, 2, 3, 4}, 50), 2.5);
  EXPECT_DOUBLE_EQ(Percentile({10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110}, 90), 100);
  EXPECT_DOUBLE_EQ(Percentile({5}, 99), 5);
  EXPECT_DOUBLE_EQ(Percentile({}, 50), 0);
  LatencySummary s = Summarize({4, 2, 8, 6});
  EXPECT_EQ(s.count, 4u);
  EXPECT_DOUBLE_EQ(s.mean, 5);
  EXPECT_DOUBLE_EQ(s.median, 5);
  EXPECT_DOUBLE_EQ(s.min, 2);
  EXPECT_DOUBLE_EQ(s.max, 8);
  EXPECT_DOUBLE_EQ(s.stddev, std::sqrt(5.0));
}

TEST(SseParserTest, AssemblesEventsFedOneByteAtATime) {
  std::vector<std::string> events;
  SseParser parser([&](std::string_view data) { events.emplace_back(data); });
  const std::string stream =
      ": keep-alive comment\n\ndata: {\"a\":1}\n\nevent: x\ndata: one\r\ndata: two\r\n\r\n"
      "data:no-space\n\ndata: [DONE]\n\n";
  for (char c : stream) parser.Feed(std::string_view(&c, 1));
  EXPECT_EQ(events, (std::vector<std::string>{"{\"a\":1}", "one\ntwo", "no-space", "[DONE]"}));
}

// Streams `max_tokens` one-token chunks, a usage chunk and [DONE], like an OpenAI server.
class FakeOpenAiServer : public http::testing::ServerTest {
 protected:
  void SetUp() override {
    http::HttpServerOptions options = DefaultOptions();
    options.access_log = nullptr;
    StartServer(options, [this](HttpServer& server) {
      for (const char* path : {"/v1/completions", "/v1/chat/completions"}) {
        const bool chat = std::string(path).find("chat") != std::string::npos;
        ASSERT_TRUE(server
                        .Handle("POST", path,
                                [this, chat](const HttpRequest& request,
                                             std::shared_ptr<ResponseWriter> writer) {
                                  Serve(request, *writer, chat);
                                })
                        .ok());
      }
    });
  }

  void Serve(const HttpRequest& request, ResponseWriter& writer, bool chat) {
    json body = json::parse(request.body, nullptr, false);
    if (body.is_discarded() || body.value("stream", false) != true) {
      http::WriteJsonError(writer, 400, "expected a streaming request", "invalid_request_error");
      return;
    }
    const std::string prompt = chat ? body["messages"][0]["content"].get<std::string>()
                                    : body["prompt"].get<std::string>();
    prompt_words_ += static_cast<int>(std::vector<std::string>(absl::StrSplit(prompt, ' ')).size());
    const int tokens = body["max_tokens"].get<int>();
    writer.StartStream();
    for (int i = 0; i < tokens; ++i) {
      json choice = chat ? json{{"index", 0}, {"delta", {{"content", "t"}}}}
                         : json{{"index", 0}, {"text", "t"}};
      writer.SendEvent(json{{"choices", json::array({choice})}}.dump());
    }
    writer.SendEvent(
        json{{"choices", json::array()}, {"usage", {{"completion_tokens", tokens}}}}.dump());
    writer.SendEvent("[DONE]");
    writer.EndStream();
  }

  LoadGenOptions Options() {
    LoadGenOptions options;
    options.port = server_->port();
    options.num_prompts = 60;
    options.max_concurrency = 16;
    options.input_len = 12;
    options.output_len = 8;
    options.request_timeout = absl::Seconds(30);
    return options;
  }

  std::atomic<int> prompt_words_{0};
};

TEST_F(FakeOpenAiServer, CompletesEveryRequestWithinTheConcurrencyCap) {
  LoadGenOptions options = Options();
  absl::StatusOr<LoadReport> report = RunLoad(options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->completed, 60);
  EXPECT_EQ(report->failed, 0);
  EXPECT_EQ(report->total_output_tokens, 60 * 8);
  EXPECT_EQ(report->total_input_tokens, 60 * 12);
  EXPECT_EQ(prompt_words_.load(), 60 * 12);
  EXPECT_LE(report->max_concurrency_observed, 16);
  EXPECT_GE(report->max_concurrency_observed, 1);
  EXPECT_EQ(report->ttft_ms.count, 60u);
  EXPECT_EQ(report->itl_ms.count, 60u * 7);
  EXPECT_EQ(report->tpot_ms.count, 60u);
  EXPECT_GT(report->ttft_ms.mean, 0);
  EXPECT_LE(report->ttft_ms.median, report->ttft_ms.p90);
  EXPECT_LE(report->ttft_ms.p90, report->ttft_ms.p99);
  EXPECT_GE(report->e2el_ms.min, report->ttft_ms.min);
  EXPECT_GT(report->request_throughput, 0);

  json out = json::parse(report->ToJson(options));
  EXPECT_EQ(out["completed"], 60);
  EXPECT_EQ(out["total_output_tokens"], 480);
  EXPECT_TRUE(out.contains("p99_itl_ms"));
  EXPECT_TRUE(out.contains("median_ttft_ms"));
  EXPECT_NE(report->ToText().find("Successful requests:"), std::string::npos);
}

TEST_F(FakeOpenAiServer, PoissonArrivalsAndChatEndpoint) {
  LoadGenOptions options = Options();
  options.endpoint = "/v1/chat/completions";
  options.max_concurrency = 0;
  options.request_rate = 5000;
  options.num_prompts = 30;
  options.range_ratio = 0.5;
  absl::StatusOr<LoadReport> report = RunLoad(options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->completed, 30);
  EXPECT_GE(report->total_output_tokens, 30 * 4);
  EXPECT_LE(report->total_output_tokens, 30 * 12);
}

TEST_F(FakeOpenAiServer, CountsFailedRequestsByError) {
  LoadGenOptions options = Options();
  options.endpoint = "/v1/missing";
  options.num_prompts = 10;
  absl::StatusOr<LoadReport> report = RunLoad(options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->completed, 0);
  EXPECT_EQ(report->failed, 10);
  EXPECT_EQ(report->errors.at("HTTP 404"), 10);
}

TEST(LoadGenOptionsTest, ValidateRejectsNonsense) {
  EXPECT_TRUE(LoadGenOptions{}.Validate().ok());
  LoadGenOptions options;
  options.num_prompts = 0;
  EXPECT_FALSE(options.Validate().ok());
  options = {};
  options.range_ratio = 1.5;
  EXPECT_FALSE(options.Validate().ok());
  options = {};
  options.request_rate = 0;
  EXPECT_FALSE(options.Validate().ok());
  EXPECT_FALSE(RunLoad(options).ok());
}

}  // namespace
}  // namespace tessera::loadgen
