// The registry's bookkeeping: ids never reused, LRU slot reuse that spares pinned slots,
// unload that waits for the requests still holding an adapter, the host-memory cap.
#include "runtime/lora/lora_registry.h"

#include <filesystem>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/lora/lora_test_util.h"
#include "tests/testing/paths.h"

namespace tessera {
namespace {

class LoraRegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = *ModelConfig::FromFile(testing::DefaultModelDir() + "/config.json");
    root_ = testing::MakeTempDir("registry");
    for (int i = 0; i < 4; ++i) {
      testing::RandomAdapterSpec spec;
      spec.seed = 100 + i;
      spec.rank = 2 + i;  // tells the slots apart through their ranks
      spec.targets = {"q_proj", "down_proj"};
      auto ra = testing::MakeRandomAdapter(model_, spec);
      testing::WritePeftAdapter(Dir(i), ra.config_json, ra.tensors);
    }
  }
  void TearDown() override { std::filesystem::remove_all(root_); }
  std::string Dir(int i) const { return root_ + "/a" + std::to_string(i); }
  std::unique_ptr<LoraRegistry> Make(int slots, int cpu) {
    LoraRegistryOptions o;
    o.max_gpu_adapters = slots;
    o.max_cpu_adapters = cpu;
    o.max_lora_rank = 8;
    auto r = LoraRegistry::Create(&backend_, model_, o);
    EXPECT_TRUE(r.ok()) << r.status();
    return std::move(*r);
  }
  // The rank slot `slot` holds for layer 0's q_proj (0 when the slot applies nothing).
  int SlotRank(const LoraRegistry& r, int slot) const { return r.tables().module(0, kLoraQ).ranks[slot]; }

  CpuBackend backend_;
  ModelConfig model_;
  std::string root_;
};

TEST_F(LoraRegistryTest, IdsAreNeverReusedAndNamesAreUnique) {
  auto r = Make(2, 4);
  auto id1 = r->Load("x", Dir(0));
  ASSERT_TRUE(id1.ok()) << id1.status();
  EXPECT_EQ(r->Load("x", Dir(1)).status().code(), absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE(r->Unload("x").ok());
  EXPECT_EQ(r->Unload("x").code(), absl::StatusCode::kNotFound);
  auto id2 = r->Load("x", Dir(0));
  ASSERT_TRUE(id2.ok());
  EXPECT_NE(*id1, *id2);
  EXPECT_NE(*id1, 0u);
  EXPECT_EQ(*r->Resolve("x"), *id2);
  // A request that resolved the old id must not silently get the new adapter.
  EXPECT_EQ(r->Retain("x", *id1).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(LoraRegistryTest, EvictsTheLeastRecentlyUsedSlot) {
  auto r = Make(2, 4);
  std::vector<uint64_t> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(*r->Load("a" + std::to_string(i), Dir(i)));
  auto use = [&](uint64_t id) {
    std::vector<uint64_t> one = {id};
    auto s = r->AcquireSlots(one);
    EXPECT_TRUE(s.ok()) << s.status();
    r->ReleaseSlots(one);
    return s.ok() ? (*s)[0] : -1;
  };
  const int s0 = use(ids[0]);
  const int s1 = use(ids[1]);
  EXPECT_NE(s0, s1);
  EXPECT_EQ(use(ids[0]), s0) << "a resident adapter keeps its slot";
  EXPECT_EQ(r->Stats().slot_uploads, 2);
  EXPECT_EQ(use(ids[2]), s1) << "a1 was used least recently";
  EXPECT_EQ(SlotRank(*r, s1), 4);
  EXPECT_EQ(r->Stats().slot_evictions, 1);
  EXPECT_EQ(use(ids[1]), s0) << "now a0 is the oldest";
  EXPECT_EQ(SlotRank(*r, s0), 3);
  EXPECT_EQ(r->Stats().slot_uploads, 4);
}

TEST_F(LoraRegistryTest, PinnedSlotsAreNotEvicted) {
  auto r = Make(2, 4);
  std::vector<uint64_t> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(*r->Load("a" + std::to_string(i), Dir(i)));
  std::vector<uint64_t> both = {ids[0], ids[1]}, third = {ids[2]}, all = {ids[0], ids[1], ids[2]};
  auto pinned = r->AcquireSlots(both);
  ASSERT_TRUE(pinned.ok());
  EXPECT_EQ(r->AcquireSlots(third).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(SlotRank(*r, (*pinned)[0]), 2);
  EXPECT_EQ(SlotRank(*r, (*pinned)[1]), 3);
  r->ReleaseSlots(both);
  EXPECT_EQ(r->AcquireSlots(all).status().code(), absl::StatusCode::kResourceExhausted) << "3 adapters, 2 slots";
  auto after = r->AcquireSlots(third);
  ASSERT_TRUE(after.ok()) << after.status() << " (the failed call must not leave pins behind)";
  r->ReleaseSlots(third);
  std::vector<uint64_t> base = {0};
  EXPECT_EQ((*r->AcquireSlots(base))[0], -1) << "id 0 is the base model";
}

TEST_F(LoraRegistryTest, UnloadWaitsForRequestsStillHoldingTheAdapter) {
  auto r = Make(2, 4);
  const uint64_t id = *r->Load("a", Dir(0));
  ASSERT_EQ(*r->Retain("a", 0), id);
  ASSERT_TRUE(r->Unload("a").ok());
  EXPECT_EQ(r->Resolve("a").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(r->Retain("a", 0).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(r->Retain("", id).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(r->List().empty());
  // The request that holds it still runs.
  std::vector<uint64_t> one = {id};
  auto slots = r->AcquireSlots(one);
  ASSERT_TRUE(slots.ok()) << slots.status();
  const int slot = (*slots)[0];
  r->ReleaseSlots(one);
  EXPECT_EQ(r->Stats().num_adapters, 1);
  EXPECT_EQ(SlotRank(*r, slot), 2);
  r->Release(id);
  EXPECT_EQ(r->Stats().num_adapters, 0);
  // The freed slot's ranks are written by the next AcquireSlots (the engine thread, the
  // only one that enqueues device work), not by the thread that released it.
  EXPECT_EQ(SlotRank(*r, slot), 2) << "no device work on the releasing thread";
  EXPECT_EQ(r->AcquireSlots(one).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(SlotRank(*r, slot), 0) << "a freed slot applies nothing once a step asks for slots";
}

TEST_F(LoraRegistryTest, RefusesLoadingBeyondHostCapacity) {
  auto r = Make(1, 2);
  ASSERT_TRUE(r->Load("a", Dir(0)).ok());
  ASSERT_TRUE(r->Load("b", Dir(1)).ok());
  auto third = r->Load("c", Dir(2));
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(r->Unload("a").ok());
  EXPECT_TRUE(r->Load("c", Dir(2)).ok());
  auto list = r->List();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].name, "b");
  EXPECT_EQ(list[1].name, "c");
  EXPECT_EQ(list[1].dir, Dir(2));
}

TEST_F(LoraRegistryTest, BadAdaptersLeaveNoTrace) {
  auto r = Make(1, 2);
  auto bad = r->Load("bad", root_ + "/missing");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(r->Resolve("bad").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(r->Stats().num_adapters, 0);
  LoraRegistryOptions o;
  o.max_gpu_adapters = 4;
  o.max_cpu_adapters = 2;
  EXPECT_FALSE(o.Validate().ok());
}

TEST_F(LoraRegistryTest, UploadsMarkTheModulesTheyAdaptActiveAndBumpTheGeneration) {
  testing::RandomAdapterSpec wide;  // every projection
  wide.seed = 200;
  wide.rank = 4;
  auto ra = testing::MakeRandomAdapter(model_, wide);
  testing::WritePeftAdapter(root_ + "/wide", ra.config_json, ra.tensors);
  auto r = Make(2, 4);
  const LoraSlotTables& t = r->tables();
  ASSERT_NE(t.active_generation, nullptr);
  auto active = [&](int target) { return *t.module(1, target).active; };
  const uint64_t start = *t.active_generation;
  EXPECT_EQ(active(kLoraQ), 0);
  auto use = [&](uint64_t id) {
    std::vector<uint64_t> one = {id};
    ASSERT_TRUE(r->AcquireSlots(one).ok());
    r->ReleaseSlots(one);
  };
  use(*r->Load("qd", Dir(0)));  // q_proj and down_proj
  EXPECT_EQ(active(kLoraQ), 1);
  EXPECT_EQ(active(kLoraDown), 1);
  EXPECT_EQ(active(kLoraK), 0) << "no adapter touches k_proj yet: backends may skip it";
  EXPECT_EQ(*t.active_generation, start + 1);
  use(*r->Load("qd2", Dir(1)));  // the same modules: nothing new to capture
  EXPECT_EQ(*t.active_generation, start + 1);
  use(*r->Load("wide", root_ + "/wide"));
  for (int target = 0; target < kNumLoraTargets; ++target) EXPECT_EQ(active(target), 1) << target;
  EXPECT_EQ(*t.active_generation, start + 2);
}

}  // namespace
}  // namespace tessera
