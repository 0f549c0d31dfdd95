// The sm_90a layout arithmetic (kernels/include/kiln/Kernels/HopperLayout.h)
// against the layouts the PTX ISA documents: every element of a tile maps to
// exactly one place, the hand-derived cases of the ISA's figures agree, and
// the descriptor a wgmma reads addresses the bytes a TMA load wrote.
#include "kiln/Kernels/HopperLayout.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <set>
#include <utility>
#include <vector>

namespace kiln::hopper {
namespace {

TEST(HopperLayout, DescriptorFieldsSitWhereThePtxIsaPutsThem) {
  // Start 0x400 (>> 4 = 0x40 in bits 0-13), leading 16 (1 in bits 16-29),
  // stride 1024 (64 in bits 32-45), 128B swizzle (1 in bits 62-63).
  EXPECT_EQ(matrixDescriptor(0x400, 16, 1024, Swizzle::k128B),
            0x4000004000010040ull);
  EXPECT_EQ(matrixDescriptor(0, 0, 0, Swizzle::k32B), 3ull << 62);
  EXPECT_EQ(matrixDescriptor(0, 0, 0, Swizzle::k64B), 2ull << 62);
  // Only the 18 bits of the shared window count; the low 4 are dropped.
  EXPECT_EQ(matrixDescriptor(0x40000 | 0x1230, 0, 0, Swizzle::kNone), 0x123ull);
  EXPECT_EQ(matrixDescriptor(0x1238, 0, 0, Swizzle::kNone), 0x123ull);
  for (uint32_t addr : {0u, 1024u, 0x3FFF0u})
    for (uint32_t lbo : {16u, 128u, 2048u})
      for (uint32_t sbo : {16u, 1024u, 0x3FFF0u})
        for (Swizzle s : {Swizzle::kNone, Swizzle::k128B, Swizzle::k64B,
                          Swizzle::k32B}) {
          DescriptorFields f =
              decodeMatrixDescriptor(matrixDescriptor(addr, lbo, sbo, s));
          EXPECT_EQ(f.address, addr);
          EXPECT_EQ(f.leadingBytes, lbo);
          EXPECT_EQ(f.strideBytes, sbo);
          EXPECT_EQ(f.baseOffset, 0u);
          EXPECT_EQ(f.swizzle, s);
        }
}

TEST(HopperLayout, SwizzlesPermuteChunksWithinTheirRepeat) {
  for (Swizzle s : {Swizzle::kNone, Swizzle::k128B, Swizzle::k64B,
                    Swizzle::k32B}) {
    const uint32_t repeat = swizzleSpanBytes(s) * 8;
    std::set<uint32_t> seen;
    for (uint32_t o = 0; o < 2 * 1024; ++o) {
      uint32_t p = swizzleOffset(o, s);
      // Bytes stay in their 16-byte chunk and the chunk in its repeat.
      EXPECT_EQ(p % 16, o % 16);
      EXPECT_EQ(p / repeat, o / repeat) << o;
      EXPECT_EQ(swizzleOffset(p, s), o); // an involution
      seen.insert(p);
    }
    EXPECT_EQ(seen.size(), 2u * 1024u); // a bijection
  }
  // 128B, rows of 128 bytes: chunk c of row r lands in chunk c ^ (r % 8).
  EXPECT_EQ(swizzleOffset(1 * 128 + 0 * 16, Swizzle::k128B), 144u);
  EXPECT_EQ(swizzleOffset(3 * 128 + 5 * 16, Swizzle::k128B), 3u * 128 + 6 * 16);
  EXPECT_EQ(swizzleOffset(7 * 128 + 7 * 16, Swizzle::k128B), 7u * 128);
  EXPECT_EQ(swizzleOffset(8 * 128 + 5 * 16 + 3, Swizzle::k128B),
            8u * 128 + 5 * 16 + 3); // row 8 starts the next repeat unswizzled
  // 64B: two rows of 64 bytes share a 128-byte line; the XOR takes bits 7-8.
  EXPECT_EQ(swizzleOffset(2 * 128 + 1 * 16, Swizzle::k64B), 2u * 128 + 3 * 16);
  EXPECT_EQ(swizzleOffset(1 * 128 + 0 * 16, Swizzle::k32B), 128u + 16);
}

TEST(HopperLayout, KMajorSwizzledTileIsABijectionOverItsBytes) {
  for (uint32_t elemBytes : {1u, 2u}) { // e4m3, bf16
    const uint32_t rows = 128, span = 128 / elemBytes;
    std::set<uint32_t> bytes;
    for (uint32_t r = 0; r < rows; ++r)
      for (uint32_t k = 0; k < span; ++k) {
        uint32_t o = kMajorSwizzled128Offset(r, k, elemBytes);
        EXPECT_LT(o, rows * 128);
        EXPECT_EQ(o / 1024, r / 8); // 8-row groups 1024 B apart (the SBO)
        EXPECT_EQ(o % 16 / elemBytes, k % (16 / elemBytes));
        bytes.insert(o);
      }
    EXPECT_EQ(bytes.size(), rows * span);
  }
  // bf16 element (5, 9): chunk 1 of row 5 -> chunk 4, byte 2 in it.
  EXPECT_EQ(kMajorSwizzled128Offset(5, 9, 2), 5u * 128 + 4 * 16 + 2);
}

// The descriptor a wgmma gets for its K slice addresses, through the
// hardware's swizzle of the address it forms, the bytes the TMA load wrote
// for that slice: the start address moves by 32 bytes per slice and the
// swizzle of the 1024-aligned repeat does the rest.
TEST(HopperLayout, AdvancedDescriptorsReadWhatTmaWrote) {
  const uint32_t base = 3 * 1024; // a 1024-aligned stage buffer
  for (uint32_t elemBytes : {2u, 1u}) {
    const uint32_t kElems = 32 / elemBytes; // one wgmma's K: 16 bf16, 32 e4m3
    for (uint32_t step = 0; step < 4; ++step) {
      DescriptorFields f = decodeMatrixDescriptor(
          kMajorSwizzled128Descriptor(base, step, kElems, elemBytes));
      ASSERT_EQ(f.swizzle, Swizzle::k128B);
      ASSERT_EQ(f.strideBytes, 1024u);
      for (uint32_t row = 0; row < 64; ++row)
        for (uint32_t k = 0; k < kElems; ++k) {
          // What the hardware addresses: rows of 128 B from the start
          // address, 8-row groups a stride apart, the 128B pattern applied
          // to the address (bits 4-6 ^= bits 7-9).
          uint32_t logical = f.address + (row / 8) * f.strideBytes +
                             (row % 8) * 128 + k * elemBytes;
          uint32_t hardware = swizzleOffset(logical, Swizzle::k128B);
          uint32_t written =
              base + kMajorSwizzled128Offset(row, step * kElems + k, elemBytes);
          ASSERT_EQ(hardware, written)
              << "row " << row << " k " << step * kElems + k;
        }
    }
  }
}

// The f32-activation form's producer threads store each converted chunk
// where a 128B-swizzled TMA load puts those 8 bf16 elements, and together
// cover an activation tile of 8 to 128 rows exactly once.
TEST(HopperLayout, ConvertedActivationChunksLandWhereTmaPutsThem) {
  for (uint32_t rows : {8u, 16u, 32u, 64u, 128u}) {
    std::set<uint32_t> chunks;
    const uint32_t iterations = (rows * 8 + 127) / 128;
    for (uint32_t i = 0; i < iterations; ++i)
      for (uint32_t t = 0; t < 128; ++t) {
        const uint32_t q = t + 128 * i, row = q / 8, k = 8 * (q % 8);
        if (row >= rows)
          continue; // the emitter predicates these off
        const uint32_t o = f32ActivationChunkOffset(t, i);
        ASSERT_EQ(o, kMajorSwizzled128Offset(row, k, 2))
            << "thread " << t << " iteration " << i;
        // The chunk's 8 elements are contiguous after the swizzle.
        for (uint32_t e = 0; e < 8; ++e)
          ASSERT_EQ(kMajorSwizzled128Offset(row, k + e, 2), o + 2 * e);
        chunks.insert(o);
      }
    EXPECT_EQ(chunks.size(), rows * 8) << rows << " rows";
  }
  // Thread 9 (row 1, chunk 1) -> chunk 0 of row 1; thread 2 at its second
  // iteration (chunk 130) is chunk 2 of row 16 -> unswizzled (phase 0).
  EXPECT_EQ(f32ActivationChunkOffset(9, 0), 128u);
  EXPECT_EQ(f32ActivationChunkOffset(2, 1), 16u * 128 + 2 * 16);
}

TEST(HopperLayout, InterleavedCoreMatrices) {
  // 16 rows x 16 bf16: four core matrices; along K 128 B apart, along M 256.
  std::set<uint32_t> bytes;
  for (uint32_t r = 0; r < 16; ++r)
    for (uint32_t k = 0; k < 16; ++k)
      bytes.insert(kMajorInterleavedOffset(r, k, 2, 128, 256));
  EXPECT_EQ(bytes.size(), 256u);
  EXPECT_EQ(*bytes.rbegin(), 510u); // (15, 15) starts the last pair
  EXPECT_EQ(kMajorInterleavedOffset(0, 8, 2, 128, 256), 128u);
  EXPECT_EQ(kMajorInterleavedOffset(9, 3, 2, 128, 256), 256u + 16 + 6);
  EXPECT_EQ(kMajorInterleavedOffset(2, 17, 1, 128, 256), 128u + 32 + 1);
}

TEST(HopperLayout, AccumulatorFragmentMatchesThePtxIsaFigure) {
  // Hand-read from "WGMMA .m64nNk16 register fragment layout for
  // accumulator matrix D": T0 holds d0,d1 = (0,0),(0,1), d2,d3 = (8,0),(8,1);
  // T1 starts at column 2, T4 at row 1; warp 1 at row 16; d4 at column 8.
  auto at = [](uint32_t t, uint32_t r) {
    FragmentElement e = accumulatorElement(t, r);
    return std::make_pair(e.row, e.col);
  };
  using P = std::pair<uint32_t, uint32_t>;
  EXPECT_EQ(at(0, 0), P(0, 0));
  EXPECT_EQ(at(0, 1), P(0, 1));
  EXPECT_EQ(at(0, 2), P(8, 0));
  EXPECT_EQ(at(0, 3), P(8, 1));
  EXPECT_EQ(at(1, 0), P(0, 2));
  EXPECT_EQ(at(3, 1), P(0, 7));
  EXPECT_EQ(at(4, 0), P(1, 0));
  EXPECT_EQ(at(31, 3), P(15, 7));
  EXPECT_EQ(at(32, 0), P(16, 0));
  EXPECT_EQ(at(0, 4), P(0, 8));
  EXPECT_EQ(at(127, 63), P(63, 127));
}

TEST(HopperLayout, AccumulatorFragmentIsABijection) {
  for (uint32_t n : {8u, 16u, 24u, 64u, 112u, 128u, 256u}) {
    ASSERT_TRUE(validWgmmaN(n));
    std::vector<int> owner(64 * n, -1);
    for (uint32_t t = 0; t < 128; ++t)
      for (uint32_t r = 0; r < n / 2; ++r) {
        FragmentElement e = accumulatorElement(t, r);
        ASSERT_LT(e.row, 64u);
        ASSERT_LT(e.col, n);
        int &o = owner[e.row * n + e.col];
        ASSERT_EQ(o, -1) << "(" << e.row << ", " << e.col << ") twice";
        o = static_cast<int>(t * 256 + r);
        FragmentSlot s = accumulatorSlot(e.row, e.col);
        EXPECT_EQ(s.thread, t);
        EXPECT_EQ(s.reg, r);
      }
    for (int o : owner)
      EXPECT_NE(o, -1);
  }
  EXPECT_FALSE(validWgmmaN(4));
  EXPECT_FALSE(validWgmmaN(132));
  EXPECT_FALSE(validWgmmaN(264));
}

TEST(HopperLayout, TensorMapBoxLimits) {
  // DeepSeek-V3's largest projection weight, [N = 16384, K = 7168] bf16,
  // K contiguous, in 128B-swizzled boxes of 64 K x 128 rows.
  uint64_t dims[2] = {7168, 16384};
  uint64_t strides[1] = {7168 * 2};
  uint32_t box[2] = {64, 128};
  EXPECT_EQ(checkTensorMapBox(2, dims, strides, box, 2, 0x10000,
                              Swizzle::k128B),
            nullptr);
  uint32_t wide[2] = {128, 128}; // 256 bytes > the 128-byte span
  EXPECT_STREQ(checkTensorMapBox(2, dims, strides, wide, 2, 0x10000,
                                 Swizzle::k128B),
               "inner box extent wider than the swizzle span");
  EXPECT_EQ(checkTensorMapBox(2, dims, strides, wide, 1, 0x10000,
                              Swizzle::k128B),
            nullptr); // e4m3: 128 bytes
  uint64_t odd[1] = {7170 * 2 - 2};
  EXPECT_NE(checkTensorMapBox(2, dims, odd, box, 2, 0x10000, Swizzle::k128B),
            nullptr);
  EXPECT_NE(checkTensorMapBox(2, dims, strides, box, 2, 0x10008,
                              Swizzle::k128B),
            nullptr);
  uint32_t tall[2] = {64, 257};
  EXPECT_NE(checkTensorMapBox(2, dims, strides, tall, 2, 0x10000,
                              Swizzle::k128B),
            nullptr);
  EXPECT_NE(checkTensorMapBox(6, dims, strides, box, 2, 0, Swizzle::k128B),
            nullptr);
}

} // namespace
} // namespace kiln::hopper
