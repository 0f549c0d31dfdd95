#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "kiln/npy.h"
#include "test_plan_builder.h"

namespace kiln::test {
namespace {

using ::testing::HasSubstr;

std::string Header(const std::string& dict) {
  std::string h = "\x93NUMPY";
  h += '\x01';
  h += '\x00';
  h += static_cast<char>(dict.size() & 0xff);
  h += static_cast<char>(dict.size() >> 8);
  return h + dict;
}

TEST(NpyTest, RoundTripAllDtypes) {
  std::string dir = MakeTempDir();
  for (DType dt : {DType::kF32, DType::kF16, DType::kI32, DType::kI64, DType::kU8}) {
    SCOPED_TRACE(DTypeName(dt));
    HostTensor t = MakeTensor(dt, {2, 3});
    for (size_t i = 0; i < t.bytes.size(); ++i) t.bytes[i] = static_cast<uint8_t>(i * 7);
    ASSERT_TRUE(WriteNpy(dir + "/t.npy", t).ok());
    auto r = ReadNpy(dir + "/t.npy");
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->dtype, dt);
    EXPECT_EQ(r->shape, t.shape);
    EXPECT_EQ(r->bytes, t.bytes);
  }
  HostTensor scalar = MakeTensor(DType::kF32, {});
  ASSERT_TRUE(WriteNpy(dir + "/s.npy", scalar).ok());
  auto r = ReadNpy(dir + "/s.npy");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->shape.empty());
  EXPECT_EQ(r->bytes.size(), 4u);
  std::filesystem::remove_all(dir);
}

TEST(NpyTest, HeaderIsAlignedAndNumpyCompatible) {
  HostTensor t = MakeTensor(DType::kI32, {5});
  auto enc = EncodeNpy(t);
  ASSERT_TRUE(enc.ok());
  EXPECT_EQ((enc->size() - 20) % 64, 0u);
  EXPECT_THAT(*enc, HasSubstr("{'descr': '<i4', 'fortran_order': False, 'shape': (5,), }"));
}

TEST(NpyTest, Truncated) {
  HostTensor t = MakeTensor(DType::kF32, {4, 4});
  auto enc = EncodeNpy(t);
  ASSERT_TRUE(enc.ok());
  EXPECT_THAT(ParseNpy(enc->substr(0, enc->size() - 1), "t.npy").status().message(),
              HasSubstr("truncated data: shape [4, 4] needs 64 bytes, file has 63"));
  EXPECT_THAT(ParseNpy(enc->substr(0, 30), "t.npy").status().message(), HasSubstr("header cut short"));
  EXPECT_THAT(ParseNpy(enc->substr(0, 5), "t.npy").status().message(), HasSubstr("truncated file"));
  EXPECT_THAT(ParseNpy("", "t.npy").status().message(), HasSubstr("npy 't.npy'"));
}

TEST(NpyTest, Rejections) {
  EXPECT_THAT(ParseNpy(Header("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }\n") +
                           std::string(16, '\0'), "f.npy").status().message(),
              HasSubstr("Fortran-order"));
  EXPECT_THAT(ParseNpy(Header("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }\n") +
                           std::string(8, '\0'), "b.npy").status().message(),
              HasSubstr("big-endian dtype '>f4'"));
  EXPECT_THAT(ParseNpy(Header("{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }\n") +
                           std::string(16, '\0'), "c.npy").status().message(),
              HasSubstr("unsupported dtype '<c8'"));
  EXPECT_THAT(ParseNpy("PK\x03\x04 not numpy at all", "z.npy").status().message(), HasSubstr("bad magic"));
}

TEST(NpyTest, ReadsVersion2Headers) {
  std::string dict = "{'descr': '<i8', 'fortran_order': False, 'shape': (1,), }\n";
  std::string v2 = "\x93NUMPY";
  v2 += '\x02';
  v2 += '\x00';
  v2 += static_cast<char>(dict.size());
  v2 += std::string(3, '\0');
  v2 += dict;
  v2 += std::string("\x2a\0\0\0\0\0\0\0", 8);
  auto r = ParseNpy(v2, "v2.npy");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->dtype, DType::kI64);
  EXPECT_EQ(r->data<int64_t>()[0], 42);
}

TEST(NpyTest, MissingFileNamesPath) {
  EXPECT_THAT(ReadNpy("/nonexistent/x.npy").status().message(), HasSubstr("/nonexistent/x.npy"));
}

}  // namespace
}  // namespace kiln::test
