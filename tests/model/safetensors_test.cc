// Malformed safetensors files are refused with an error naming the file and the problem.
#include "runtime/model/safetensors.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tessera {
namespace {

using ::testing::HasSubstr;

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("tessera_st_" + std::to_string(::getpid()) + "_" +
                                                     ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Writes an 8-byte length (header_len_override when >= 0), the header, then `data` bytes.
  std::string Write(const std::string& header, size_t data_bytes, int64_t header_len_override = -1) {
    std::string path = (dir_ / "model.safetensors").string();
    std::ofstream out(path, std::ios::binary);
    uint64_t len = header_len_override >= 0 ? static_cast<uint64_t>(header_len_override) : header.size();
    out.write(reinterpret_cast<const char*>(&len), 8);
    out << header;
    std::string data(data_bytes, '\x01');
    out << data;
    return path;
  }

  absl::Status OpenStatus(const std::string& path) { return SafetensorsFile::Open(path).status(); }

  std::filesystem::path dir_;
};

TEST_F(SafetensorsTest, OpensAWellFormedFile) {
  auto path = Write(R"({"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"b":{"dtype":"BF16","shape":[4],"data_offsets":[24,32]}})", 32);
  auto f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_NE((*f)->Find("a"), nullptr);
  EXPECT_EQ((*f)->Find("a")->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ((*f)->Find("b")->dtype, DType::kBF16);
}

TEST_F(SafetensorsTest, RefusesHeaderLongerThan100MB) {
  auto path = Write("{}", 0, 100'000'001);
  absl::Status st = OpenStatus(path);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("100 MB"));
  EXPECT_THAT(st.message(), HasSubstr(path));
}

TEST_F(SafetensorsTest, RefusesHeaderRunningPastTheFile) {
  auto path = Write("{}", 0, 5000);
  EXPECT_THAT(OpenStatus(path).message(), HasSubstr("past the end"));
}

TEST_F(SafetensorsTest, RefusesFileShorterThanTheLengthField) {
  std::string path = (dir_ / "model.safetensors").string();
  std::ofstream(path) << "abc";
  EXPECT_THAT(OpenStatus(path).message(), HasSubstr("too short"));
}

TEST_F(SafetensorsTest, RefusesHeaderThatIsNotJson) {
  EXPECT_THAT(OpenStatus(Write("{not json", 0)).message(), HasSubstr("not a JSON object"));
  EXPECT_THAT(OpenStatus(Write("[1,2]", 0)).message(), HasSubstr("not a JSON object"));
}

TEST_F(SafetensorsTest, RefusesOffsetsOutsideTheFile) {
  auto path = Write(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8);
  EXPECT_THAT(OpenStatus(path).message(), HasSubstr("outside the data section"));
}

TEST_F(SafetensorsTest, RefusesReversedOffsets) {
  auto path = Write(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", 8);
  EXPECT_THAT(OpenStatus(path).message(), HasSubstr("outside the data section"));
}

TEST_F(SafetensorsTest, RefusesOverlappingTensors) {
  auto path = Write(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})", 24);
  EXPECT_THAT(OpenStatus(path).message(), HasSubstr("overlap"));
}

TEST_F(SafetensorsTest, RefusesShapeTimesDtypeNotMatchingByteLength) {
  auto path = Write(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", 16);
  absl::Status st = OpenStatus(path);
  EXPECT_THAT(st.message(), HasSubstr("'a'"));
  EXPECT_THAT(st.message(), HasSubstr("12 bytes"));
}

TEST_F(SafetensorsTest, RefusesUnsupportedDtype) {
  auto path = Write(R"({"a":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]}})", 4);
  EXPECT_THAT(OpenStatus(path).message(), HasSubstr("unsupported dtype F8_E4M3"));
}

TEST_F(SafetensorsTest, RefusesNegativeOrFractionalDimensions) {
  EXPECT_THAT(OpenStatus(Write(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4)).message(),
              HasSubstr("dimension"));
  EXPECT_THAT(OpenStatus(Write(R"({"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", 4)).message(),
              HasSubstr("dimension"));
}

TEST_F(SafetensorsTest, RefusesEntriesMissingFields) {
  EXPECT_THAT(OpenStatus(Write(R"({"a":{"dtype":"F32","shape":[1]}})", 4)).message(), HasSubstr("data_offsets"));
}

TEST_F(SafetensorsTest, RefusesAMissingFile) {
  EXPECT_EQ(OpenStatus((dir_ / "nope.safetensors").string()).code(), absl::StatusCode::kNotFound);
}

TEST_F(SafetensorsTest, WriterRoundTripsTensorsAndMetadata) {
  std::vector<float> a = {1, 2, 3, 4, 5, 6};
  std::vector<uint16_t> b = {7, 8};
  std::string path = (dir_ / "out.safetensors").string();
  ASSERT_TRUE(WriteSafetensors(path, {{"z", DType::kF32, {2, 3}, a.data(), 24}, {"b", DType::kBF16, {2}, b.data(), 4}},
                               {{"format", "pt"}})
                  .ok());
  auto f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->metadata().at("format"), "pt");
  const TensorInfo* z = (*f)->Find("z");
  ASSERT_NE(z, nullptr);
  EXPECT_EQ(std::vector<float>(static_cast<const float*>(z->data), static_cast<const float*>(z->data) + 6), a);
  EXPECT_EQ(static_cast<const uint16_t*>((*f)->Find("b")->data)[1], 8);
}

}  // namespace
}  // namespace tessera
