// --adapter-root containment: ".." , absolute paths elsewhere and symlinks out are
// refused; paths inside (relative, absolute, or through an inner symlink) resolve.
#include "runtime/lora/adapter_path.h"

#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"
#include "tests/lora/lora_test_util.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;

class AdapterPathTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = testing::MakeTempDir("paths");
    root_ = base_ + "/root";
    outside_ = base_ + "/outside";
    for (const std::string& d : {root_ + "/team/a1", outside_ + "/evil"}) {
      fs::create_directories(d);
      std::ofstream(d + "/adapter_config.json") << "{}";
    }
  }
  void TearDown() override { fs::remove_all(base_); }
  std::string base_, root_, outside_;
};

TEST_F(AdapterPathTest, ResolvesPathsInsideTheRoot) {
  const std::string want = fs::canonical(root_ + "/team/a1").string();
  EXPECT_EQ(*ResolveAdapterPath(root_, "team/a1"), want);
  EXPECT_EQ(*ResolveAdapterPath(root_, "team/./../team/a1"), want) << "a '..' that stays inside is fine";
  auto missing = ResolveAdapterPath(root_, "team/x/../a1");
  EXPECT_FALSE(missing.ok()) << "team/x does not exist";
  EXPECT_EQ(*ResolveAdapterPath(root_, root_ + "/team/a1"), want);
  fs::create_directory_symlink(root_ + "/team/a1", root_ + "/alias");
  EXPECT_EQ(*ResolveAdapterPath(root_, "alias"), want);
}

TEST_F(AdapterPathTest, RefusesDotDotEscapes) {
  auto r = ResolveAdapterPath(root_, "../outside/evil");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kPermissionDenied) << r.status();
  auto r2 = ResolveAdapterPath(root_, "team/../../outside/evil");
  EXPECT_EQ(r2.status().code(), absl::StatusCode::kPermissionDenied) << r2.status();
  auto r3 = ResolveAdapterPath(root_, "../outside/not-there");
  EXPECT_EQ(r3.status().code(), absl::StatusCode::kPermissionDenied) << "escapes are refused before existence is told";
}

TEST_F(AdapterPathTest, RefusesAbsolutePathsElsewhere) {
  EXPECT_EQ(ResolveAdapterPath(root_, outside_ + "/evil").status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(ResolveAdapterPath(root_, "/etc").status().code(), absl::StatusCode::kPermissionDenied);
  // A sibling whose name starts with the root's is still outside.
  fs::create_directories(root_ + "2/x");
  EXPECT_EQ(ResolveAdapterPath(root_, root_ + "2/x").status().code(), absl::StatusCode::kPermissionDenied);
}

TEST_F(AdapterPathTest, RefusesSymlinksOut) {
  fs::create_directory_symlink(outside_ + "/evil", root_ + "/link");
  EXPECT_EQ(ResolveAdapterPath(root_, "link").status().code(), absl::StatusCode::kPermissionDenied);
  // A real directory inside whose weights file links out.
  fs::create_directories(root_ + "/sneaky");
  std::ofstream(outside_ + "/secret") << "x";
  fs::create_symlink(outside_ + "/secret", root_ + "/sneaky/adapter_model.safetensors");
  auto r = ResolveAdapterPath(root_, "sneaky");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(r.status().message().find("adapter_model.safetensors"), std::string::npos) << r.status();
}

TEST_F(AdapterPathTest, MissingPathsAndRootsAreReportedPlainly) {
  EXPECT_EQ(ResolveAdapterPath(root_, "team/none").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ResolveAdapterPath("", "team/a1").status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ResolveAdapterPath(base_ + "/no-root", "a").status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ResolveAdapterPath(root_, "").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tessera
