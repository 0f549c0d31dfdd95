// The CUDA driver API, loaded with dlopen("libcuda.so.1") through a table of
// symbols: Kiln never links CUDA, so one binary runs with and without a GPU.
// Only the few types the runtime needs are declared here (no cuda.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kiln::cuda {

using CUresult = int;
using CUdevice = int;
using CUdeviceptr = unsigned long long;
using CUcontext = struct CUctx_st*;
using CUmodule = struct CUmod_st*;
using CUfunction = struct CUfunc_st*;
using CUstream = struct CUstream_st*;
using CUevent = struct CUevent_st*;
using CUjit_option = int;

inline constexpr CUresult CUDA_SUCCESS = 0;
inline constexpr CUjit_option CU_JIT_ERROR_LOG_BUFFER = 5;
inline constexpr CUjit_option CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 6;
inline constexpr int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75;
inline constexpr int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76;
inline constexpr int CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16;
inline constexpr int CU_FUNC_ATTRIBUTE_NUM_REGS = 4;
inline constexpr int CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8;

// Tensor maps (TMA descriptors): an opaque 128-byte, 64-byte-aligned object
// that cuTensorMapEncodeTiled fills. Enum values as cuda.h numbers them
// (CUtensorMapDataType, CUtensorMapSwizzle, ...); note the swizzle numbering
// differs from a wgmma descriptor's (kiln/Kernels/HopperLayout.h).
struct alignas(64) CUtensorMap {
  unsigned long long opaque[16];
};
inline constexpr int CU_TENSOR_MAP_DATA_TYPE_UINT8 = 0;
inline constexpr int CU_TENSOR_MAP_DATA_TYPE_INT32 = 3;
inline constexpr int CU_TENSOR_MAP_DATA_TYPE_INT64 = 5;
inline constexpr int CU_TENSOR_MAP_DATA_TYPE_FLOAT16 = 6;
inline constexpr int CU_TENSOR_MAP_DATA_TYPE_FLOAT32 = 7;
inline constexpr int CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 = 9;
inline constexpr int CU_TENSOR_MAP_INTERLEAVE_NONE = 0;
inline constexpr int CU_TENSOR_MAP_SWIZZLE_NONE = 0;
inline constexpr int CU_TENSOR_MAP_SWIZZLE_32B = 1;
inline constexpr int CU_TENSOR_MAP_SWIZZLE_64B = 2;
inline constexpr int CU_TENSOR_MAP_SWIZZLE_128B = 3;
inline constexpr int CU_TENSOR_MAP_L2_PROMOTION_L2_256B = 3;
inline constexpr int CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE = 0;

// X-macro: (name, return, params). Symbols are looked up by these names.
#define KILN_CUDA_SYMBOLS(X)                                                              \
  X(cuInit, (unsigned int flags))                                                          \
  X(cuDriverGetVersion, (int* version))                                                    \
  X(cuDeviceGetCount, (int* count))                                                        \
  X(cuDeviceGet, (CUdevice * device, int ordinal))                                         \
  X(cuDeviceGetName, (char* name, int len, CUdevice device))                               \
  X(cuDeviceGetAttribute, (int* value, int attrib, CUdevice device))                       \
  X(cuDevicePrimaryCtxRetain, (CUcontext * ctx, CUdevice device))                          \
  X(cuDevicePrimaryCtxRelease_v2, (CUdevice device))                                       \
  X(cuCtxSetCurrent, (CUcontext ctx))                                                      \
  X(cuCtxSynchronize, ())                                                                  \
  X(cuModuleLoadDataEx, (CUmodule * module, const void* image, unsigned int num_options,   \
                         CUjit_option* options, void** option_values))                     \
  X(cuModuleUnload, (CUmodule module))                                                     \
  X(cuModuleGetFunction, (CUfunction * fn, CUmodule module, const char* name))             \
  X(cuMemAlloc_v2, (CUdeviceptr * ptr, size_t size))                                       \
  X(cuMemFree_v2, (CUdeviceptr ptr))                                                       \
  X(cuMemsetD8_v2, (CUdeviceptr ptr, unsigned char value, size_t count))                   \
  X(cuMemcpyHtoD_v2, (CUdeviceptr dst, const void* src, size_t size))                      \
  X(cuMemcpyDtoH_v2, (void* dst, CUdeviceptr src, size_t size))                            \
  X(cuMemAllocHost_v2, (void** ptr, size_t size))                                          \
  X(cuMemFreeHost, (void* ptr))                                                            \
  X(cuMemcpyHtoDAsync_v2, (CUdeviceptr dst, const void* src, size_t size, CUstream stream)) \
  X(cuStreamCreate, (CUstream * stream, unsigned int flags))                               \
  X(cuStreamSynchronize, (CUstream stream))                                                \
  X(cuStreamDestroy_v2, (CUstream stream))                                                 \
  X(cuEventCreate, (CUevent * event, unsigned int flags))                                  \
  X(cuEventRecord, (CUevent event, CUstream stream))                                       \
  X(cuEventSynchronize, (CUevent event))                                                   \
  X(cuEventDestroy_v2, (CUevent event))                                                    \
  X(cuLaunchKernel, (CUfunction fn, unsigned int gx, unsigned int gy, unsigned int gz,     \
                     unsigned int bx, unsigned int by, unsigned int bz,                    \
                     unsigned int shared_bytes, CUstream stream, void** params,            \
                     void** extra))                                                        \
  X(cuEventElapsedTime, (float* ms, CUevent start, CUevent end))                           \
  X(cuFuncSetAttribute, (CUfunction fn, int attrib, int value))                            \
  X(cuFuncGetAttribute, (int* value, int attrib, CUfunction fn))                           \
  X(cuTensorMapEncodeTiled,                                                                \
    (CUtensorMap * map, int dtype, unsigned int rank, void* address,                      \
     const unsigned long long* dims, const unsigned long long* strides,                   \
     const unsigned int* box, const unsigned int* element_strides, int interleave,       \
     int swizzle, int l2_promotion, int oob_fill))                                         \
  X(cuGetErrorName, (CUresult error, const char** str))                                    \
  X(cuGetErrorString, (CUresult error, const char** str))

struct Driver {
#define KILN_CUDA_MEMBER(name, params) CUresult(*name) params = nullptr;
  KILN_CUDA_SYMBOLS(KILN_CUDA_MEMBER)
#undef KILN_CUDA_MEMBER

  // Turns a CUresult into a Status naming the call:
  // "cuModuleLoadData: CUDA_ERROR_INVALID_PTX (a PTX JIT compilation failed)".
  absl::Status Check(CUresult result, std::string_view call) const;
};

// Loads libcuda.so.1 and runs cuInit once per process. Errors:
// "CUDA driver not available: libcuda.so.1 not found (...)", or a cuInit error.
absl::StatusOr<const Driver*> GetDriver();

}  // namespace kiln::cuda
