// The CUDA executor's weight upload, checked on the CPU: the layout of all
// weights in one device allocation, and the chunks the host stages for it
// (assembled here into the image the device would hold).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>

#include "weight_upload.h"

namespace kiln {
namespace {

TEST(WeightUploadTest, LayoutAlignsEveryWeightInPlanOrder) {
  WeightLayout l = LayOutWeights({1, 256, 0, 257, 0}, 256);
  EXPECT_EQ(l.offsets, (std::vector<uint64_t>{0, 256, 512, 512, 1024}));
  EXPECT_EQ(l.total, 1024u);
  EXPECT_EQ(LayOutWeights({}, 256).total, 0u);
  EXPECT_EQ(LayOutWeights({0, 0}, 256).total, 0u);
  WeightLayout big = LayOutWeights({uint64_t{7} << 30, 3}, 256);  // past 4 GiB
  EXPECT_EQ(big.offsets[1], uint64_t{7} << 30);
  EXPECT_EQ(big.total, (uint64_t{7} << 30) + 256);
}

// Weights of random sizes (some empty, some spanning chunks) staged in chunks
// of several sizes: every chunk but the last is full, and the assembled image
// holds every weight's bytes at its offset and zeros between them.
TEST(WeightUploadTest, ChunksAssembleIntoTheImage) {
  std::mt19937_64 rng(11);
  std::vector<std::vector<uint8_t>> data;
  std::vector<uint64_t> sizes;
  for (int w = 0; w < 60; ++w) {
    uint64_t size = rng() % 4 == 0 ? 0 : rng() % 5000;
    if (w == 7) size = 20000;  // several chunks
    std::vector<uint8_t> bytes(size);
    for (auto& b : bytes) b = static_cast<uint8_t>(rng() | 1);  // never 0: padding is told apart
    data.push_back(std::move(bytes));
    sizes.push_back(size);
  }
  std::vector<WeightView> views;
  for (const auto& d : data) views.push_back({d.data(), d.size()});
  WeightLayout layout = LayOutWeights(sizes, 256);
  for (uint64_t w = 1; w < sizes.size(); ++w) EXPECT_GE(layout.offsets[w], layout.offsets[w - 1] + sizes[w - 1]);
  for (uint64_t chunk_bytes : {uint64_t{256}, uint64_t{1000}, uint64_t{4096}, uint64_t{1} << 20}) {
    SCOPED_TRACE(chunk_bytes);
    std::vector<uint8_t> image(layout.total, 0xee), staging(chunk_bytes, 0xcc);
    uint64_t chunks = (layout.total + chunk_bytes - 1) / chunk_bytes;
    for (uint64_t c = 0; c < chunks; ++c) {
      uint64_t n = FillChunk(layout, views, c, chunk_bytes, staging.data());
      EXPECT_EQ(n, c + 1 < chunks ? chunk_bytes : layout.total - c * chunk_bytes);
      std::memcpy(image.data() + c * chunk_bytes, staging.data(), n);
    }
    EXPECT_EQ(FillChunk(layout, views, chunks, chunk_bytes, staging.data()), 0u);
    std::vector<bool> covered(layout.total, false);
    for (size_t w = 0; w < sizes.size(); ++w) {
      EXPECT_EQ(layout.offsets[w] % 256, 0u);
      ASSERT_LE(layout.offsets[w] + sizes[w], layout.total);
      EXPECT_TRUE(std::equal(data[w].begin(), data[w].end(), image.begin() + layout.offsets[w])) << "weight " << w;
      std::fill(covered.begin() + layout.offsets[w], covered.begin() + layout.offsets[w] + sizes[w], true);
    }
    for (uint64_t i = 0; i < layout.total; ++i)
      if (!covered[i]) {
        ASSERT_EQ(image[i], 0) << "padding byte " << i;
      }
  }
}

}  // namespace
}  // namespace kiln
