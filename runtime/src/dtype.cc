#include "kiln/dtype.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kiln/tensor.h"
#include "plan_generated.h"

namespace kiln {

static_assert(static_cast<int>(DType::kF32) == static_cast<int>(plan::DType::f32));
static_assert(static_cast<int>(DType::kF16) == static_cast<int>(plan::DType::f16));
static_assert(static_cast<int>(DType::kBF16) == static_cast<int>(plan::DType::bf16));
static_assert(static_cast<int>(DType::kI32) == static_cast<int>(plan::DType::i32));
static_assert(static_cast<int>(DType::kI64) == static_cast<int>(plan::DType::i64));
static_assert(static_cast<int>(DType::kF8E4M3) == static_cast<int>(plan::DType::f8e4m3));
static_assert(static_cast<int>(DType::kU8) == static_cast<int>(plan::DType::u8));
static_assert(kNumDTypes == static_cast<int>(plan::DType::MAX) + 1);

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "float32";
    case DType::kF16: return "float16";
    case DType::kBF16: return "bfloat16";
    case DType::kI32: return "int32";
    case DType::kI64: return "int64";
    case DType::kF8E4M3: return "float8_e4m3";
    case DType::kU8: return "uint8";
  }
  return "dtype(?)";
}

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32: case DType::kI32: return 4;
    case DType::kF16: case DType::kBF16: return 2;
    case DType::kI64: return 8;
    case DType::kF8E4M3: case DType::kU8: return 1;
  }
  return 0;
}

bool DTypeValid(uint8_t raw) { return raw < kNumDTypes; }

int64_t HostTensor::num_elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

HostTensor MakeTensor(DType dtype, std::vector<int64_t> shape) {
  HostTensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.bytes.assign(static_cast<size_t>(t.num_elements()) * DTypeSize(dtype), 0);
  return t;
}

std::string ShapeToString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

std::string DescribeTensor(DType dtype, const std::vector<int64_t>& shape) {
  return absl::StrCat(DTypeName(dtype), " ", ShapeToString(shape));
}

}  // namespace kiln
