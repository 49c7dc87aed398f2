// config.json parsing: required keys, Llama variants, and rotary scaling frequencies.
#include "runtime/model/config.h"

#include <cmath>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/paths.h"

namespace tessera {
namespace {

using ::testing::HasSubstr;

constexpr char kBase[] = R"({"hidden_size":64,"intermediate_size":172,"num_hidden_layers":2,
  "num_attention_heads":8,"num_key_value_heads":4,"vocab_size":512,"max_position_embeddings":512)";

absl::StatusOr<ModelConfig> Parse(const std::string& extra) {
  return ModelConfig::FromJsonText(std::string(kBase) + extra + "}", "config.json");
}

TEST(ModelConfigTest, ReadsTheDefaultModel) {
  auto c = ModelConfig::FromFile(testing::DefaultModelDir() + "/config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->hidden_size, 64);
  EXPECT_EQ(c->num_key_value_heads, 4);
  EXPECT_EQ(c->head_dim, 8);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_EQ(c->eos_token_ids, std::vector<int32_t>{2});
  EXPECT_NEAR(c->rms_norm_eps, 1e-5, 1e-12);
}

TEST(ModelConfigTest, HeadDimDefaultsToHiddenOverHeadsAndCanBeOverridden) {
  EXPECT_EQ(Parse("")->head_dim, 8);
  EXPECT_EQ(Parse(R"(,"head_dim":16)")->head_dim, 16);
}

TEST(ModelConfigTest, EosMayBeAList) {
  EXPECT_EQ(Parse(R"(,"eos_token_id":[2,7])")->eos_token_ids, (std::vector<int32_t>{2, 7}));
}

TEST(ModelConfigTest, MissingKeyIsNamed) {
  auto c = ModelConfig::FromJsonText(R"({"hidden_size":64})", "x/config.json");
  EXPECT_THAT(c.status().message(), HasSubstr("x/config.json"));
  EXPECT_THAT(c.status().message(), HasSubstr("intermediate_size"));
}

TEST(ModelConfigTest, RejectsHeadsNotDivisibleByKvHeads) {
  EXPECT_THAT(Parse(R"(,"num_key_value_heads":3)").status().message(), HasSubstr("multiple"));
}

TEST(ModelConfigTest, RejectsUnknownRopeScalingAndNonLlamaModels) {
  EXPECT_THAT(Parse(R"(,"rope_scaling":{"type":"yarn","factor":2})").status().message(), HasSubstr("yarn"));
  EXPECT_THAT(Parse(R"(,"model_type":"gpt2")").status().message(), HasSubstr("gpt2"));
  EXPECT_FALSE(ModelConfig::FromJsonText("{oops", "c").ok());
}

TEST(ModelConfigTest, ReadsTransformers5RopeParameters) {
  auto plain = Parse(R"(,"rope_parameters":{"rope_theta":500000.0,"rope_type":"default"})");
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->rope_theta, 500000.0);
  EXPECT_EQ(plain->rope_scaling.type, RopeScaling::Type::kNone);
  auto linear = Parse(R"(,"rope_parameters":{"rope_theta":20000.0,"rope_type":"linear","factor":2.0})");
  ASSERT_TRUE(linear.ok()) << linear.status();
  EXPECT_EQ(linear->rope_theta, 20000.0);
  EXPECT_EQ(linear->rope_scaling.type, RopeScaling::Type::kLinear);
  EXPECT_EQ(linear->rope_scaling.factor, 2.0);
}

TEST(ModelConfigTest, DefaultInvFreqFollowsThetaPowers) {
  auto c = Parse("");
  auto inv = c->RopeInvFreq(0);
  ASSERT_EQ(inv.size(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_FLOAT_EQ(inv[i], static_cast<float>(1.0 / std::pow(10000.0, 2.0 * i / 8)));
}

TEST(ModelConfigTest, LinearScalingDividesFrequencies) {
  auto c = Parse(R"(,"rope_scaling":{"type":"linear","factor":4.0})");
  auto base = Parse("")->RopeInvFreq(0);
  auto inv = c->RopeInvFreq(0);
  for (size_t i = 0; i < inv.size(); ++i) EXPECT_FLOAT_EQ(inv[i], base[i] / 4.0f);
}

TEST(ModelConfigTest, DynamicScalingChangesBaseOnlyPastTheTrainedLength) {
  auto c = Parse(R"(,"rope_scaling":{"type":"dynamic","factor":2.0})");
  auto base = Parse("")->RopeInvFreq(0);
  EXPECT_EQ(c->RopeInvFreq(512), base);
  auto inv = c->RopeInvFreq(1024);
  // base' = 10000 * (2*1024/512 - 1)^(8/6) = 10000 * 3^(4/3)
  const double new_base = 10000.0 * std::pow(3.0, 8.0 / 6.0);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(inv[i], 1.0 / std::pow(new_base, 2.0 * i / 8), 1e-7);
}

TEST(ModelConfigTest, Llama3ScalingKeepsHighFrequenciesAndDividesLowOnes) {
  // head_dim 128, theta 500000, as Llama-3.1 ships.
  auto c = ModelConfig::FromJsonText(R"({"hidden_size":4096,"intermediate_size":14336,"num_hidden_layers":1,
    "num_attention_heads":32,"num_key_value_heads":8,"vocab_size":128256,"max_position_embeddings":131072,
    "rope_theta":500000.0,"rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,
    "high_freq_factor":4.0,"original_max_position_embeddings":8192}})", "c");
  ASSERT_TRUE(c.ok()) << c.status();
  auto inv = c->RopeInvFreq(0);
  ASSERT_EQ(inv.size(), 64u);
  auto plain = [](int i) { return 1.0 / std::pow(500000.0, static_cast<double>(static_cast<float>(2 * i) / 128.0f)); };
  // Highest frequency: wavelength 2π < 8192/4, unchanged.
  EXPECT_FLOAT_EQ(inv[0], static_cast<float>(plain(0)));
  // Lowest frequency: wavelength far above 8192, divided by 8.
  EXPECT_FLOAT_EQ(inv[63], static_cast<float>(plain(63) / 8.0));
  // A medium one is smoothed between the two.
  for (int i = 0; i < 64; ++i) {
    double wl = 2 * M_PI / plain(i);
    if (wl >= 8192.0 / 4 && wl <= 8192.0) {
      double s = (8192.0 / wl - 1.0) / 3.0;
      EXPECT_NEAR(inv[i], (1 - s) * plain(i) / 8 + s * plain(i), 1e-6 * plain(i));
    }
  }
}

}  // namespace
}  // namespace tessera
