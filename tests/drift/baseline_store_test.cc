// BaselineStore: JSON round trip, file naming, atomic replacement, malformed files.
#include "runtime/drift/baseline_store.h"

#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"

namespace tessera::drift {
namespace {

namespace fs = std::filesystem;

class BaselineStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) /
           ("drift_store_" +
            std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  static BaselineData Sample(std::string model, std::string adapter) {
    BaselineData d;
    d.model = std::move(model);
    d.adapter = std::move(adapter);
    d.created = absl::FromUnixMillis(1700000000123);
    d.count = 3;
    for (int f = 0; f < kNumNumericFeatures; ++f)
      d.values[f] = {0.1 * (f + 1), -1.2345678901234567, 1e-300};
    d.finish_reasons = {{"stop", 2}, {"length", 1}};
    d.token_buckets[0] = 5;
    d.token_buckets[15] = 7;
    return d;
  }

  fs::path dir_;
};

TEST_F(BaselineStoreTest, RoundTripPreservesEveryField) {
  BaselineStore store(dir_.string());
  ASSERT_TRUE(store.Init().ok());
  const BaselineData a = Sample("org/llama-7b", "");
  const BaselineData b = Sample("org/llama-7b", "sql.v2");
  ASSERT_TRUE(store.Save(a).ok());
  ASSERT_TRUE(store.Save(b).ok());
  auto loaded = store.LoadAll();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_EQ(loaded->size(), 2u);
  for (const BaselineData& got : *loaded) {
    const BaselineData& want = got.adapter.empty() ? a : b;
    EXPECT_EQ(got.model, want.model);
    EXPECT_EQ(got.adapter, want.adapter);
    EXPECT_EQ(got.created, want.created);
    EXPECT_EQ(got.count, want.count);
    EXPECT_EQ(got.values, want.values);  // doubles survive bit for bit
    EXPECT_EQ(got.finish_reasons, want.finish_reasons);
    EXPECT_EQ(got.token_buckets, want.token_buckets);
  }
}

TEST_F(BaselineStoreTest, FileNamesAreUnambiguous) {
  BaselineStore store(dir_.string());
  EXPECT_NE(store.PathFor("a.b", "c"), store.PathFor("a", "b.c"));
  EXPECT_NE(store.PathFor("a", ""), store.PathFor("a", "%"));
  EXPECT_EQ(fs::path(store.PathFor("org/m", "x")).parent_path(), dir_);
}

TEST_F(BaselineStoreTest, SaveReplacesTheFileAndLeavesNoTemporaries) {
  BaselineStore store(dir_.string());
  ASSERT_TRUE(store.Init().ok());
  BaselineData d = Sample("m", "a");
  ASSERT_TRUE(store.Save(d).ok());
  d.count = 2;
  for (auto& v : d.values) v.pop_back();
  ASSERT_TRUE(store.Save(d).ok());
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir_)) {
    ++files;
    EXPECT_EQ(e.path().string(), store.PathFor("m", "a"));
  }
  EXPECT_EQ(files, 1);
  auto loaded = store.LoadAll();
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ((*loaded)[0].count, 2);
}

TEST_F(BaselineStoreTest, RemoveDeletesAndToleratesAbsence) {
  BaselineStore store(dir_.string());
  ASSERT_TRUE(store.Init().ok());
  ASSERT_TRUE(store.Save(Sample("m", "a")).ok());
  EXPECT_TRUE(store.Remove("m", "a").ok());
  EXPECT_TRUE(store.Remove("m", "a").ok());
  EXPECT_TRUE(store.LoadAll()->empty());
}

TEST_F(BaselineStoreTest, MalformedFileIsAnErrorNamingIt) {
  BaselineStore store(dir_.string());
  ASSERT_TRUE(store.Init().ok());
  const std::string path = store.PathFor("m", "a");
  std::ofstream(path) << "{\"format\": \"tessera.drift.baseline\", \"version\": 1}";
  auto loaded = store.LoadAll();
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(loaded.status().message().find(path), std::string::npos);
}

TEST_F(BaselineStoreTest, DisabledStoreDoesNothing) {
  BaselineStore store("");
  EXPECT_TRUE(store.Init().ok());
  EXPECT_TRUE(store.Save(Sample("m", "a")).ok());
  EXPECT_TRUE(store.LoadAll()->empty());
}

}  // namespace
}  // namespace tessera::drift
