// Host-side tensors, used for inputs and outputs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kiln/dtype.h"

namespace kiln {

// A dense, C-order tensor in host memory.
struct HostTensor {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;

  int64_t num_elements() const;
  template <typename T> T* data() { return reinterpret_cast<T*>(bytes.data()); }
  template <typename T> const T* data() const {
    return reinterpret_cast<const T*>(bytes.data());
  }
};

// Allocates a zeroed tensor of the given dtype and shape.
HostTensor MakeTensor(DType dtype, std::vector<int64_t> shape);
// "int32 [1, 8]"
std::string DescribeTensor(DType dtype, const std::vector<int64_t>& shape);
// "[1, 8]"
std::string ShapeToString(const std::vector<int64_t>& shape);

}  // namespace kiln
