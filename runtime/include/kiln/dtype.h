// Element types of tensors, matching kiln.plan.DType numbering.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace kiln {

enum class DType : uint8_t {
  kF32 = 0,
  kF16 = 1,
  kBF16 = 2,
  kI32 = 3,
  kI64 = 4,
  kF8E4M3 = 5,
  kU8 = 6,
};
inline constexpr int kNumDTypes = 7;

// "float32", "float16", "bfloat16", "int32", "int64", "float8_e4m3", "uint8";
// "dtype(N)" for values out of range.
const char* DTypeName(DType dtype);
// Size of one element in bytes; 0 for values out of range.
size_t DTypeSize(DType dtype);
bool DTypeValid(uint8_t raw);

}  // namespace kiln
