//===- HopperLayout.h - sm_90a operand and fragment layouts -----*- C++ -*-===//
//
// The address arithmetic the Hopper GEMM kernels are built on, as plain
// integer functions with no MLIR or CUDA dependency, so that the code
// generator (which emits the same arithmetic as IR), the runtime (which
// encodes tensor maps) and the unit tests share one definition, and the
// tests can check it against the layouts the PTX ISA documents without a
// GPU:
//
//  - the shared-memory matrix descriptor wgmma.mma_async reads its A and B
//    operands through (PTX ISA, "Matrix Descriptor Format");
//  - the 128-byte swizzle a TMA load with CU_TENSOR_MAP_SWIZZLE_128B applies
//    and a descriptor with swizzle mode 128B expects (bits [4, 7) of the
//    byte offset XOR bits [7, 10));
//  - where element (row, k) of a K-major bf16 / e4m3 operand tile lands in
//    shared memory, for the 128B-swizzled and the unswizzled (core-matrix)
//    layouts;
//  - which thread and register hold element (row, col) of a wgmma
//    m64nNk* f32 accumulator (PTX ISA, "Register Fragment: Matrix D").
//
//===----------------------------------------------------------------------===//
#ifndef KILN_KERNELS_HOPPERLAYOUT_H
#define KILN_KERNELS_HOPPERLAYOUT_H

#include <cstdint>

namespace kiln::hopper {

/// Swizzle modes of the matrix descriptor (bits 62-63) and of a tensor map.
enum class Swizzle : uint8_t { kNone = 0, k128B = 1, k64B = 2, k32B = 3 };

/// Bytes one swizzled row spans (the inner extent of a TMA box may not
/// exceed it); 16 for kNone (one core-matrix row).
constexpr uint32_t swizzleSpanBytes(Swizzle s) {
  switch (s) {
  case Swizzle::k128B: return 128;
  case Swizzle::k64B: return 64;
  case Swizzle::k32B: return 32;
  case Swizzle::kNone: return 16;
  }
  return 16;
}

/// Shared-memory matrix descriptor: start address (bits 0-13), leading
/// dimension byte offset (16-29) and stride dimension byte offset (32-45),
/// each in units of 16 bytes; base offset (49-51) 0, which requires the
/// swizzle pattern to start at an address aligned to its repeat (1024 B for
/// 128B); swizzle mode in 62-63. `address` is the shared-window address
/// (below 256 KiB); all three byte quantities must be multiples of 16.
constexpr uint64_t matrixDescriptor(uint32_t address, uint32_t leadingBytes,
                                    uint32_t strideBytes, Swizzle swizzle) {
  return (uint64_t((address & 0x3FFFF) >> 4)) |
         (uint64_t((leadingBytes & 0x3FFFF) >> 4) << 16) |
         (uint64_t((strideBytes & 0x3FFFF) >> 4) << 32) |
         (uint64_t(swizzle) << 62);
}

/// The fields of a descriptor, for tests and dumps.
struct DescriptorFields {
  uint32_t address, leadingBytes, strideBytes, baseOffset;
  Swizzle swizzle;
};
constexpr DescriptorFields decodeMatrixDescriptor(uint64_t d) {
  return {uint32_t(d & 0x3FFF) << 4, uint32_t((d >> 16) & 0x3FFF) << 4,
          uint32_t((d >> 32) & 0x3FFF) << 4, uint32_t((d >> 49) & 0x7),
          Swizzle(uint8_t(d >> 62))};
}

/// The byte a swizzled layout stores logical byte `offset` at, relative to
/// a region aligned to the pattern's repeat (span x 8 rows): the 16-byte
/// chunk index within a span is XORed with the row index within the repeat
/// (for 128B: bits [4, 7) ^= bits [7, 10); 64B: [4, 6) ^= [7, 9); 32B:
/// bit 4 ^= bit 7).
constexpr uint32_t swizzleOffset(uint32_t offset, Swizzle s) {
  switch (s) {
  case Swizzle::k128B: return offset ^ (((offset >> 7) & 7) << 4);
  case Swizzle::k64B: return offset ^ (((offset >> 7) & 3) << 4);
  case Swizzle::k32B: return offset ^ (((offset >> 7) & 1) << 4);
  case Swizzle::kNone: return offset;
  }
  return offset;
}

/// A K-major operand tile in shared memory as a TMA load with a 128B
/// swizzle writes it: `rows` rows (M or N) of `spanElems` = 128 / elemBytes
/// elements of K each, row r at byte 128 * r before the swizzle (8-row
/// groups of 1024 B, the descriptor's stride offset). Byte of element
/// (row, k), k < spanElems.
constexpr uint32_t kMajorSwizzled128Offset(uint32_t row, uint32_t k,
                                           uint32_t elemBytes) {
  return swizzleOffset(row * 128 + k * elemBytes, Swizzle::k128B);
}

/// The descriptor of a K-major 128B-swizzled tile starting at `address`
/// (1024-aligned), advanced to its `kStep`-th slice of `kElems` elements
/// (one wgmma's K: 16 bf16 or 32 e4m3 = 32 bytes): the start address moves
/// by kStep * kElems * elemBytes within the 128-byte span (the hardware
/// applies the swizzle to the address it forms, so the slice needs no other
/// change); stride offset 1024 (8 rows of 128 B); the leading offset is
/// unused by swizzled K-major layouts whose K fits the span (set to 16).
constexpr uint64_t kMajorSwizzled128Descriptor(uint32_t address,
                                               uint32_t kStep,
                                               uint32_t kElems,
                                               uint32_t elemBytes) {
  return matrixDescriptor(address + kStep * kElems * elemBytes, 16, 1024,
                          Swizzle::k128B);
}

/// Where producer thread `thread` (0-127) stores the 16 bytes (8 bf16) of
/// its `iteration`-th chunk of an activation tile in the f32-activation
/// form (HopperGemm.h): chunk q = thread + 128 * iteration is row q / 8,
/// elements 8 (q % 8) .. + 8 of the k-block, at the byte of
/// kMajorSwizzled128Offset(row, 8 (q % 8), 2). The row's swizzle phase is
/// thread / 8 mod 8 at every iteration (rows advance by 16), so each
/// thread's offset is a constant plus 2048 per iteration.
constexpr uint32_t f32ActivationChunkOffset(uint32_t thread,
                                            uint32_t iteration) {
  uint32_t row = thread / 8, chunk = thread % 8;
  return row * 128 + ((chunk ^ (row & 7)) * 16) + 2048 * iteration;
}

/// The unswizzled ("interleave") K-major layout: core matrices of 8 rows x
/// 16 bytes (128 contiguous bytes), `leadingBytes` apart along K and
/// `strideBytes` apart along M/N. Byte of element (row, k).
constexpr uint32_t kMajorInterleavedOffset(uint32_t row, uint32_t k,
                                           uint32_t elemBytes,
                                           uint32_t leadingBytes,
                                           uint32_t strideBytes) {
  uint32_t perCore = 16 / elemBytes; // K elements in one core-matrix row
  return (row / 8) * strideBytes + (k / perCore) * leadingBytes +
         (row % 8) * 16 + (k % perCore) * elemBytes;
}

/// Where element (row, col) of an m64nN f32 accumulator lives: thread
/// `thread` (0-127) of the warpgroup, its register `reg` (0 to N/2 - 1).
/// Warp w holds rows [16w, 16w + 16); within a warp, lane l holds rows
/// l / 4 and l / 4 + 8 and, in each group of 8 columns, columns
/// 2 * (l % 4) and 2 * (l % 4) + 1; registers go (row, col), (row, col + 1),
/// (row + 8, col), (row + 8, col + 1), then the next 8 columns.
struct FragmentSlot {
  uint32_t thread, reg;
};
constexpr FragmentSlot accumulatorSlot(uint32_t row, uint32_t col) {
  uint32_t warp = row / 16, r = row % 16;
  uint32_t lane = (r % 8) * 4 + (col % 8) / 2;
  uint32_t reg = (col / 8) * 4 + (r / 8) * 2 + (col % 2);
  return {warp * 32 + lane, reg};
}

/// The inverse: the (row, col) thread `thread` register `reg` holds.
struct FragmentElement {
  uint32_t row, col;
};
constexpr FragmentElement accumulatorElement(uint32_t thread, uint32_t reg) {
  uint32_t warp = thread / 32, lane = thread % 32;
  return {warp * 16 + lane / 4 + 8 * ((reg >> 1) & 1),
          8 * (reg >> 2) + 2 * (lane % 4) + (reg & 1)};
}

/// Valid wgmma N for an f32 accumulator: a multiple of 8 in [8, 256]
/// (bf16 and e4m3 alike).
constexpr bool validWgmmaN(uint32_t n) { return n >= 8 && n <= 256 && n % 8 == 0; }

/// A TMA box (cuTensorMapEncodeTiled's limits): rank 1-5, every box extent
/// in [1, 256], the global address 16-byte aligned (32 with interleave,
/// unused here), the strides of dimensions 1..rank-1 (`globalStridesBytes`
/// has rank - 1 entries, dimension 0 being contiguous) multiples of 16 below
/// 2^40, the inner box a multiple of 16 bytes and, with a swizzle, at most
/// the swizzle span. Returns null when the box is valid, else what is wrong.
inline const char *checkTensorMapBox(uint32_t rank, const uint64_t *globalDims,
                                     const uint64_t *globalStridesBytes,
                                     const uint32_t *boxDims,
                                     uint32_t elemBytes,
                                     uint64_t globalAddress,
                                     Swizzle swizzle) {
  if (rank < 1 || rank > 5)
    return "rank outside [1, 5]";
  if (globalAddress % 16 != 0)
    return "global address not 16-byte aligned";
  for (uint32_t d = 0; d < rank; ++d) {
    if (globalDims[d] < 1 || globalDims[d] > (uint64_t(1) << 32))
      return "global extent outside [1, 2^32]";
    if (boxDims[d] < 1 || boxDims[d] > 256)
      return "box extent outside [1, 256]";
    if (d > 0 && (globalStridesBytes[d - 1] % 16 != 0 ||
                  globalStridesBytes[d - 1] >= (uint64_t(1) << 40)))
      return "global stride not a multiple of 16 below 2^40";
  }
  if ((uint64_t(boxDims[0]) * elemBytes) % 16 != 0)
    return "inner box extent not a multiple of 16 bytes";
  if (swizzle != Swizzle::kNone &&
      uint64_t(boxDims[0]) * elemBytes > swizzleSpanBytes(swizzle))
    return "inner box extent wider than the swizzle span";
  return nullptr;
}

} // namespace kiln::hopper

#endif // KILN_KERNELS_HOPPERLAYOUT_H
