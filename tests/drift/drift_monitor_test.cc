// DriftMonitor: baseline capture and promotion, live eviction by count and time (fake clock),
// drops on a full queue, persistence across restarts, and the admin JSON.
#include "runtime/drift/drift_monitor.h"

#include <atomic>
#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace tessera::drift {
namespace {

namespace fs = std::filesystem;

class FakeClock {
 public:
  absl::Time Now() const { return absl::FromUnixNanos(nanos_.load()); }
  void Advance(absl::Duration d) { nanos_.fetch_add(absl::ToInt64Nanoseconds(d)); }

 private:
  std::atomic<int64_t> nanos_{int64_t{1700000000} * 1000000000};
};

RequestFeatures Request(double prompt, std::string finish = "stop", std::string model = "m",
                        std::string adapter = "") {
  RequestFeatures f;
  f.model = std::move(model);
  f.adapter = std::move(adapter);
  f.prompt_tokens = static_cast<int64_t>(prompt);
  f.output_tokens = 10;
  f.finish_reason = std::move(finish);
  f.mean_logprob = -1.0 - prompt / 100;
  f.mean_entropy = 2.0;
  f.mean_top1_prob = 0.5;
  f.token_buckets[static_cast<int>(prompt) % kNumTokenBuckets] = 3;
  return f;
}

const FeatureDrift& Feature(const ModelDrift& m, std::string_view name) {
  for (const FeatureDrift& f : m.features) {
    if (f.feature == name) return f;
  }
  ADD_FAILURE() << "no feature " << name;
  return m.features.front();
}

class DriftMonitorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) /
           ("drift_monitor_" +
            std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  DriftMonitorOptions Options() {
    DriftMonitorOptions o;
    o.reference_size = 4;
    o.live_size = 4;
    o.num_bins = 4;
    o.clock = [this] { return clock_.Now(); };
    return o;
  }

  std::unique_ptr<DriftMonitor> Make(DriftMonitorOptions o) {
    auto m = DriftMonitor::Create(std::move(o));
    EXPECT_TRUE(m.ok()) << m.status();
    return m.ok() ? *std::move(m) : nullptr;
  }

  void ObserveAll(DriftMonitor& m, std::initializer_list<double> prompts) {
    for (double p : prompts) ASSERT_TRUE(m.Observe(Request(p)));
    ASSERT_TRUE(m.WaitIdle().ok());
  }

  FakeClock clock_;
  fs::path dir_;
};

TEST_F(DriftMonitorTest, CapturesBaselineFromTheFirstRequests) {
  auto m = Make(Options());
  ObserveAll(*m, {10, 20});
  DriftSnapshot s = m->Snapshot();
  ASSERT_EQ(s.models.size(), 1u);
  EXPECT_FALSE(s.models[0].has_baseline);
  EXPECT_TRUE(s.models[0].capturing);
  EXPECT_EQ(s.models[0].capture_progress, 2);
  EXPECT_TRUE(std::isnan(Feature(s.models[0], "prompt_length").ks));

  ObserveAll(*m, {30, 40});
  s = m->Snapshot();
  EXPECT_TRUE(s.models[0].has_baseline);
  EXPECT_FALSE(s.models[0].capturing);
  EXPECT_EQ(s.models[0].reference_count, 4);
  // The live window holds the same four requests: no drift on any feature.
  for (const FeatureDrift& f : s.models[0].features) {
    if (f.numeric) {
      EXPECT_EQ(f.ks, 0.0) << f.feature;
      EXPECT_EQ(f.ks_pvalue, 1.0) << f.feature;
    }
    EXPECT_EQ(f.psi, 0.0) << f.feature;
    EXPECT_EQ(f.kl, 0.0) << f.feature;
    EXPECT_EQ(f.reference_count, 4);
    EXPECT_EQ(f.live_count, 4);
  }
}

TEST_F(DriftMonitorTest, ShiftedTrafficShowsDriftAndEvictsByCount) {
  auto m = Make(Options());
  ObserveAll(*m, {10, 20, 30, 40});
  ObserveAll(*m, {500, 600, 700, 800});  // the live window (4) now holds only these
  DriftSnapshot s = m->Snapshot();
  const ModelDrift& md = s.models[0];
  EXPECT_EQ(md.live_count, 4);
  const FeatureDrift& prompt = Feature(md, "prompt_length");
  EXPECT_EQ(prompt.ks, 1.0);
  EXPECT_NEAR(prompt.ks_pvalue, 2.0 / 70, 1e-15);  // 2 / C(8,4)
  EXPECT_GT(prompt.psi, 0.25);
  EXPECT_GT(prompt.kl, 0.0);
  // Output length did not move.
  EXPECT_EQ(Feature(md, "output_length").ks, 0.0);
  EXPECT_TRUE(std::isnan(Feature(md, "finish_reason").ks));
  EXPECT_EQ(Feature(md, "finish_reason").psi, 0.0);
}

TEST_F(DriftMonitorTest, LiveWindowEvictsByTimeWithTheInjectedClock) {
  DriftMonitorOptions o = Options();
  o.live_size = 100;
  o.live_seconds = 60;
  auto m = Make(o);
  ObserveAll(*m, {10, 20, 30, 40});
  EXPECT_EQ(m->Snapshot().models[0].live_count, 4);
  clock_.Advance(absl::Seconds(59));
  EXPECT_EQ(m->Snapshot().models[0].live_count, 4);
  clock_.Advance(absl::Seconds(2));
  DriftSnapshot s = m->Snapshot();
  EXPECT_EQ(s.models[0].live_count, 0);
  EXPECT_EQ(s.models[0].reference_count, 4);  // the baseline is not a sliding window
  EXPECT_TRUE(std::isnan(Feature(s.models[0], "prompt_length").psi));
  ObserveAll(*m, {10});
  EXPECT_EQ(m->Snapshot().models[0].live_count, 1);
}

TEST_F(DriftMonitorTest, DropsWhenTheQueueIsFullWithoutBlocking) {
  DriftMonitorOptions o = Options();
  o.queue_capacity = 4;
  o.live_size = 100;
  o.start_worker = false;
  auto m = Make(o);
  EXPECT_EQ(m->WaitIdle().code(), absl::StatusCode::kFailedPrecondition);
  int accepted = 0;
  for (int i = 0; i < 10; ++i) accepted += m->Observe(Request(i)) ? 1 : 0;
  EXPECT_EQ(accepted, 4);
  DriftSnapshot s = m->Snapshot();
  EXPECT_EQ(s.observed, 10);
  EXPECT_EQ(s.dropped, 6);
  EXPECT_EQ(s.processed, 0);
  m->Start();
  ASSERT_TRUE(m->WaitIdle().ok());
  s = m->Snapshot();
  EXPECT_EQ(s.processed, 4);
  EXPECT_EQ(s.models[0].live_count, 4);
}

TEST_F(DriftMonitorTest, CaptureNextRequestsKeepsTheOldBaselineUntilComplete) {
  auto m = Make(Options());
  ObserveAll(*m, {10, 20, 30, 40});
  ASSERT_TRUE(m->CaptureBaseline("m", "", CaptureMode::kNextRequests).ok());
  ObserveAll(*m, {500, 600});
  ModelDrift md = m->Snapshot().models[0];
  EXPECT_TRUE(md.capturing);
  EXPECT_EQ(md.capture_progress, 2);
  EXPECT_GT(Feature(md, "prompt_length").ks, 0.0);  // still against the first baseline
  ObserveAll(*m, {700, 800});
  md = m->Snapshot().models[0];
  EXPECT_FALSE(md.capturing);
  EXPECT_EQ(Feature(md, "prompt_length").ks, 0.0);  // the new reference is the live window
}

TEST_F(DriftMonitorTest, PromoteLiveMakesTheLiveWindowTheReferenceAtOnce) {
  DriftMonitorOptions o = Options();
  o.reference_size = 2;
  o.live_size = 3;
  auto m = Make(o);
  EXPECT_EQ(m->CaptureBaseline("m", "", CaptureMode::kPromoteLive).code(),
            absl::StatusCode::kFailedPrecondition);
  ObserveAll(*m, {10, 20, 300, 400, 500});
  EXPECT_GT(Feature(m->Snapshot().models[0], "prompt_length").ks, 0.0);
  ASSERT_TRUE(m->CaptureBaseline("m", "", CaptureMode::kPromoteLive).ok());
  ModelDrift md = m->Snapshot().models[0];
  EXPECT_EQ(md.reference_count, 3);
  EXPECT_EQ(Feature(md, "prompt_length").ks, 0.0);
  EXPECT_EQ(Feature(md, "prompt_length").psi, 0.0);
}

TEST_F(DriftMonitorTest, BaselinesSurviveARestartAndResetRemovesThem) {
  DriftMonitorOptions o = Options();
  o.drift_dir = dir_.string();
  {
    auto m = Make(o);
    ObserveAll(*m, {10, 20, 30, 40});
    for (double p : {10.0, 20.0, 30.0, 40.0})
      ASSERT_TRUE(m->Observe(Request(p, "stop", "m", "lora-a")));
    ASSERT_TRUE(m->WaitIdle().ok());
  }
  {
    auto m = Make(o);
    DriftSnapshot s = m->Snapshot();
    ASSERT_EQ(s.models.size(), 2u);  // ("m", "") and ("m", "lora-a"), before any traffic
    for (const ModelDrift& md : s.models) {
      EXPECT_TRUE(md.has_baseline);
      EXPECT_FALSE(md.capturing);
      EXPECT_EQ(md.reference_count, 4);
      EXPECT_EQ(md.live_count, 0);
    }
    ObserveAll(*m, {10, 20, 30, 40});
    const ModelDrift base = m->Snapshot().models[0];
    EXPECT_EQ(base.adapter, "");
    EXPECT_EQ(Feature(base, "prompt_length").ks, 0.0);  // compared with the loaded baseline
    ASSERT_TRUE(m->Reset("m", "").ok());
    const ModelDrift after = m->Snapshot().models[0];
    EXPECT_FALSE(after.has_baseline);
    EXPECT_EQ(after.live_count, 0);
  }
  auto m = Make(o);
  DriftSnapshot s = m->Snapshot();
  ASSERT_EQ(s.models.size(), 1u);
  EXPECT_EQ(s.models[0].adapter, "lora-a");
}

TEST_F(DriftMonitorTest, InstalledBaselineFromJsonIsUsedAndPersisted) {
  DriftMonitorOptions o = Options();
  o.drift_dir = dir_.string();
  auto m = Make(o);
  // Reference prompts {1, 2, 3}; live {2, 3, 4}: F_ref - F_live at 1..4 = 1/3, 1/3, 1/3, 0,
  // so D = 1/3 and, n = m = 3, h = 1, p = 1 (every ordering has D >= 1/3).
  BaselineData data;
  data.model = "m";
  data.adapter = "a";
  data.count = 3;
  data.values[kPromptLength] = {1, 2, 3};
  for (int f = 1; f < kNumNumericFeatures; ++f) data.values[f] = {0, 0, 0};
  data.finish_reasons = {{"stop", 3}};
  auto parsed = BaselineFromJson(BaselineToJson(data));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_TRUE(m->InstallBaseline(*parsed).ok());
  EXPECT_TRUE(fs::exists(BaselineStore(o.drift_dir).PathFor("m", "a")));
  for (double p : {2.0, 3.0, 4.0}) {
    RequestFeatures f = Request(p, "stop", "m", "a");
    f.mean_logprob = f.mean_entropy = f.mean_top1_prob = f.output_tokens = 0;
    ASSERT_TRUE(m->Observe(f));
  }
  ASSERT_TRUE(m->WaitIdle().ok());
  const ModelDrift md = m->Snapshot().models[0];
  EXPECT_FALSE(md.capturing);
  EXPECT_NEAR(Feature(md, "prompt_length").ks, 1.0 / 3, 1e-15);
  EXPECT_EQ(Feature(md, "prompt_length").ks_pvalue, 1.0);
  EXPECT_EQ(Feature(md, "output_length").ks, 0.0);
  EXPECT_EQ(Feature(md, "finish_reason").kl, 0.0);
  BaselineData empty;
  EXPECT_FALSE(m->InstallBaseline(empty).ok());
}

TEST_F(DriftMonitorTest, CorruptBaselineFailsCreate) {
  fs::create_directories(dir_);
  std::ofstream(dir_ / "m.%.baseline.json") << "not json";
  DriftMonitorOptions o = Options();
  o.drift_dir = dir_.string();
  auto m = DriftMonitor::Create(o);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(DriftMonitorTest, NonFiniteFeaturesAreRejectedNotCounted) {
  auto m = Make(Options());
  RequestFeatures bad = Request(10);
  bad.mean_logprob = -std::numeric_limits<double>::infinity();
  ASSERT_TRUE(m->Observe(bad));
  ASSERT_TRUE(m->WaitIdle().ok());
  DriftSnapshot s = m->Snapshot();
  EXPECT_EQ(s.rejected, 1);
  EXPECT_TRUE(s.models.empty());
}

TEST_F(DriftMonitorTest, JsonReportsNullForUndefinedStatistics) {
  auto m = Make(Options());
  ObserveAll(*m, {10, 20, 30, 40});
  nlohmann::json j = nlohmann::json::parse(m->ToJson());
  EXPECT_EQ(j["observed"], 4);
  EXPECT_EQ(j["dropped"], 0);
  ASSERT_EQ(j["models"].size(), 1u);
  const nlohmann::json& features = j["models"][0]["features"];
  EXPECT_EQ(features["prompt_length"]["ks"], 0.0);
  EXPECT_EQ(features["prompt_length"]["ks_pvalue"], 1.0);
  EXPECT_TRUE(features["finish_reason"]["ks"].is_null());
  EXPECT_EQ(features["output_token_bucket"]["live_count"], 4);
}

TEST(DriftMonitorOptions, ValidateRejectsNonsense) {
  DriftMonitorOptions o;
  EXPECT_TRUE(o.Validate().ok());
  o.num_bins = 1;
  EXPECT_FALSE(o.Validate().ok());
  o = DriftMonitorOptions{};
  o.live_seconds = -1;
  EXPECT_FALSE(o.Validate().ok());
  o = DriftMonitorOptions{};
  o.reference_size = 0;
  EXPECT_FALSE(o.Validate().ok());
  o = DriftMonitorOptions{};
  o.psi_epsilon = 0;
  EXPECT_FALSE(o.Validate().ok());
}

}  // namespace
}  // namespace tessera::drift
