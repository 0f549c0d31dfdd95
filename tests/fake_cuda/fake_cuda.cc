// A stand-in for libcuda.so.1 that runs no kernel: it lets the CUDA
// executor's host side (module and function lookup, device memory, weight
// upload, tensor-map encoding, launch shapes and parameters) run on a
// machine without a GPU, and records what it was asked to do.
//
// Device memory is host memory (a CUdeviceptr is a host address), so copies
// work and outputs read back as whatever the arena held (zeros). Calls are
// checked as the driver documents them (tensor maps: alignment, box and
// stride limits, the whole map inside one allocation; launches: block size,
// dynamic shared memory within what cuFuncSetAttribute allowed) and fail with
// CUDA_ERROR_INVALID_VALUE otherwise.
//
// Environment: FAKE_CUDA_LOG, a file the calls are appended to as JSON lines
// ({"call": "launch", "name": ..., "grid": ..., "block": ..., "shared": ...,
// "params": [...]}, {"call": "tensor_map", ...}, {"call": "set_attribute",
// ...}); FAKE_CUDA_PARAMS, a file of lines "name size size ..." giving each
// function's parameter sizes (8: logged as an integer; 128: a tensor map,
// logged decoded); FAKE_CUDA_SMS, the SM count (default 132);
// FAKE_CUDA_MAX_DYNAMIC_SHARED, the most dynamic shared memory a function
// may be allowed (default 227 KiB).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

namespace {

constexpr int kSuccess = 0, kInvalidValue = 1, kNotFound = 500;
constexpr uint64_t kMapMagic = 0x50414d4e4c494bull;  // "KILNMAP"

struct Function {
  std::string name;
  int max_dynamic_shared = 48 * 1024;
};
struct Module {
  std::string image;
  std::vector<Function*> functions;
};

std::mutex mu;
std::map<uintptr_t, size_t> allocations;  // base -> bytes
std::map<std::string, std::vector<int>> param_sizes;
bool params_loaded = false;

void Log(const std::string& line) {
  const char* path = std::getenv("FAKE_CUDA_LOG");
  if (!path) return;
  FILE* f = std::fopen(path, "a");
  if (!f) return;
  std::fprintf(f, "%s\n", line.c_str());
  std::fclose(f);
}

void LoadParamSizes() {
  if (params_loaded) return;
  params_loaded = true;
  const char* path = std::getenv("FAKE_CUDA_PARAMS");
  if (!path) return;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string name;
    ls >> name;
    int size;
    while (ls >> size) param_sizes[name].push_back(size);
  }
}

// Whether [p, p + bytes) lies inside one allocation.
bool Inside(uintptr_t p, uint64_t bytes) {
  auto it = allocations.upper_bound(p);
  if (it == allocations.begin()) return false;
  --it;
  return p >= it->first && p - it->first + bytes <= it->second;
}

void* Allocate(size_t bytes) {
  void* p = nullptr;
  if (posix_memalign(&p, 256, bytes ? bytes : 1) != 0) return nullptr;
  std::lock_guard<std::mutex> l(mu);
  allocations[reinterpret_cast<uintptr_t>(p)] = bytes;
  return p;
}

int Free(uintptr_t p) {
  std::lock_guard<std::mutex> l(mu);
  auto it = allocations.find(p);
  if (it == allocations.end()) return kInvalidValue;
  allocations.erase(it);
  std::free(reinterpret_cast<void*>(p));
  return kSuccess;
}

std::string List(const uint64_t* v, unsigned n) {
  std::string s = "[";
  for (unsigned i = 0; i < n; ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

}  // namespace

extern "C" {

int cuInit(unsigned int) { return kSuccess; }
int cuDriverGetVersion(int* v) { *v = 12080; return kSuccess; }
int cuDeviceGetCount(int* n) { *n = 1; return kSuccess; }
int cuDeviceGet(int* d, int ordinal) { *d = ordinal; return ordinal == 0 ? kSuccess : kInvalidValue; }
int cuDeviceGetName(char* name, int len, int) {
  std::snprintf(name, len, "Kiln fake sm_90 (runs no kernel)");
  return kSuccess;
}
int cuDeviceGetAttribute(int* value, int attrib, int) {
  const char* sms = std::getenv("FAKE_CUDA_SMS");
  switch (attrib) {
    case 16: *value = sms ? std::atoi(sms) : 132; break;  // multiprocessors
    case 75: *value = 9; break;                           // compute capability
    case 76: *value = 0; break;
    default: *value = 0;
  }
  return kSuccess;
}
int cuDevicePrimaryCtxRetain(void** ctx, int) { static int c; *ctx = &c; return kSuccess; }
int cuDevicePrimaryCtxRelease_v2(int) { return kSuccess; }
int cuCtxSetCurrent(void*) { return kSuccess; }
int cuCtxSynchronize() { return kSuccess; }

int cuModuleLoadDataEx(void** module, const void* image, unsigned int, int*, void**) {
  auto* m = new Module;
  const char* p = static_cast<const char*>(image);
  if (std::memcmp(p, "\x7f" "ELF", 4) == 0) {  // a cubin: up to its section headers' end
    uint64_t shoff;
    uint16_t shentsize, shnum;
    std::memcpy(&shoff, p + 0x28, 8);
    std::memcpy(&shentsize, p + 0x3A, 2);
    std::memcpy(&shnum, p + 0x3C, 2);
    m->image.assign(p, shoff + uint64_t(shentsize) * shnum);
  } else {
    m->image = p;  // PTX text
  }
  *module = m;
  Log("{\"call\": \"module\", \"bytes\": " + std::to_string(m->image.size()) + "}");
  return kSuccess;
}
int cuModuleUnload(void* module) {
  auto* m = static_cast<Module*>(module);
  for (Function* f : m->functions) delete f;
  delete m;
  return kSuccess;
}
int cuModuleGetFunction(void** fn, void* module, const char* name) {
  auto* m = static_cast<Module*>(module);
  // A cubin names its entries in a string table; PTX in .entry lines.
  std::string sym = std::string(1, '\0') + name + std::string(1, '\0');
  if (m->image.find(sym) == std::string::npos &&
      m->image.find(std::string(".entry ") + name + "(") == std::string::npos)
    return kNotFound;
  auto* f = new Function{name};
  m->functions.push_back(f);
  *fn = f;
  return kSuccess;
}

int cuMemAlloc_v2(uintptr_t* p, size_t bytes) {
  void* q = Allocate(bytes);
  if (!q) return 2;  // CUDA_ERROR_OUT_OF_MEMORY
  *p = reinterpret_cast<uintptr_t>(q);
  return kSuccess;
}
int cuMemFree_v2(uintptr_t p) { return Free(p); }
int cuMemsetD8_v2(uintptr_t p, unsigned char v, size_t n) {
  if (!Inside(p, n)) return kInvalidValue;
  std::memset(reinterpret_cast<void*>(p), v, n);
  return kSuccess;
}
int cuMemcpyHtoD_v2(uintptr_t dst, const void* src, size_t n) {
  if (!Inside(dst, n)) return kInvalidValue;
  std::memcpy(reinterpret_cast<void*>(dst), src, n);
  return kSuccess;
}
int cuMemcpyDtoH_v2(void* dst, uintptr_t src, size_t n) {
  if (!Inside(src, n)) return kInvalidValue;
  std::memcpy(dst, reinterpret_cast<const void*>(src), n);
  return kSuccess;
}
int cuMemAllocHost_v2(void** p, size_t bytes) { *p = std::malloc(bytes ? bytes : 1); return *p ? kSuccess : 2; }
int cuMemFreeHost(void* p) { std::free(p); return kSuccess; }
int cuMemcpyHtoDAsync_v2(uintptr_t dst, const void* src, size_t n, void*) { return cuMemcpyHtoD_v2(dst, src, n); }
int cuStreamCreate(void** s, unsigned int) { static int x; *s = &x; return kSuccess; }
int cuStreamSynchronize(void*) { return kSuccess; }
int cuStreamDestroy_v2(void*) { return kSuccess; }
int cuEventCreate(void** e, unsigned int) { static int x; *e = &x; return kSuccess; }
int cuEventRecord(void*, void*) { return kSuccess; }
int cuEventSynchronize(void*) { return kSuccess; }
int cuEventDestroy_v2(void*) { return kSuccess; }
int cuEventElapsedTime(float* ms, void*, void*) { *ms = 0; return kSuccess; }

int cuFuncSetAttribute(void* fn, int attrib, int value) {
  auto* f = static_cast<Function*>(fn);
  if (attrib == 8) {  // CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
    const char* cap = std::getenv("FAKE_CUDA_MAX_DYNAMIC_SHARED");
    if (value < 0 || value > (cap ? std::atoi(cap) : 227 * 1024)) return kInvalidValue;
    f->max_dynamic_shared = value;
  }
  Log("{\"call\": \"set_attribute\", \"name\": \"" + f->name + "\", \"attribute\": " + std::to_string(attrib) +
      ", \"value\": " + std::to_string(value) + "}");
  return kSuccess;
}
int cuFuncGetAttribute(int* value, int, void*) { *value = 0; return kSuccess; }

int cuTensorMapEncodeTiled(uint64_t* map, int dtype, unsigned int rank, void* address,
                           const unsigned long long* dims, const unsigned long long* strides,
                           const unsigned int* box, const unsigned int* element_strides, int interleave,
                           int swizzle, int, int) {
  static const int kBytes[] = {1, 2, 4, 4, 8, 8, 2, 4, 8, 2};
  if (dtype < 0 || dtype > 9 || rank < 1 || rank > 5 || interleave != 0 || swizzle < 0 || swizzle > 3)
    return kInvalidValue;
  const uint64_t elem = kBytes[dtype], a = reinterpret_cast<uintptr_t>(address);
  if (a % 16 != 0) return kInvalidValue;
  uint64_t last = elem;
  for (unsigned d = 0; d < rank; ++d) {
    if (dims[d] == 0 || dims[d] > (1ull << 32) || box[d] == 0 || box[d] > 256 || element_strides[d] != 1)
      return kInvalidValue;
    if (d > 0 && (strides[d - 1] % 16 != 0 || strides[d - 1] >= (1ull << 40))) return kInvalidValue;
    last += (dims[d] - 1) * (d == 0 ? elem : strides[d - 1]);
  }
  const uint64_t inner = box[0] * elem, span[] = {0, 32, 64, 128};
  if (inner % 16 != 0 || (swizzle > 0 && inner > span[swizzle])) return kInvalidValue;
  {
    std::lock_guard<std::mutex> l(mu);
    if (!Inside(a, last)) return kInvalidValue;
  }
  uint64_t d64[5] = {0}, b64[5] = {0};
  for (unsigned d = 0; d < rank; ++d) {
    d64[d] = dims[d];
    b64[d] = box[d];
  }
  std::memset(map, 0, 128);
  map[0] = kMapMagic;
  map[1] = a;
  map[2] = rank;
  std::memcpy(map + 3, d64, 40);
  std::memcpy(map + 8, b64, 40);
  map[13] = uint64_t(dtype);
  map[14] = uint64_t(swizzle);
  map[15] = rank > 1 ? strides[0] : 0;
  Log("{\"call\": \"tensor_map\", \"address\": " + std::to_string(a) + ", \"dtype\": " + std::to_string(dtype) +
      ", \"dims\": " + List(d64, rank) + ", \"box\": " + List(b64, rank) + ", \"swizzle\": " +
      std::to_string(swizzle) + "}");
  return kSuccess;
}

int cuLaunchKernel(void* fn, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx, unsigned int by,
                   unsigned int bz, unsigned int shared, void*, void** params, void**) {
  auto* f = static_cast<Function*>(fn);
  if (gx == 0 || gy == 0 || gz == 0 || bx * by * bz == 0 || bx * by * bz > 1024 ||
      shared > static_cast<unsigned>(f->max_dynamic_shared))
    return kInvalidValue;
  std::string ps;
  {
    std::lock_guard<std::mutex> l(mu);
    LoadParamSizes();
    auto it = param_sizes.find(f->name);
    if (it != param_sizes.end())
      for (size_t i = 0; i < it->second.size(); ++i) {
        ps += i ? ", " : "";
        if (it->second[i] == 128) {
          const auto* m = static_cast<const uint64_t*>(params[i]);
          if (m[0] != kMapMagic) return kInvalidValue;  // not a map this driver encoded
          ps += "{\"map_address\": " + std::to_string(m[1]) + ", \"dims\": " + List(m + 3, unsigned(m[2])) +
                ", \"box\": " + List(m + 8, unsigned(m[2])) + "}";
        } else {
          uint64_t v;
          std::memcpy(&v, params[i], 8);
          ps += std::to_string(v);
        }
      }
  }
  Log("{\"call\": \"launch\", \"name\": \"" + f->name + "\", \"grid\": " + std::to_string(gx) +
      ", \"block\": " + std::to_string(bx) + ", \"shared\": " + std::to_string(shared) + ", \"params\": [" + ps +
      "]}");
  return kSuccess;
}

int cuGetErrorName(int e, const char** s) {
  *s = e == kInvalidValue ? "CUDA_ERROR_INVALID_VALUE" : e == kNotFound ? "CUDA_ERROR_NOT_FOUND" : "CUDA_ERROR_UNKNOWN";
  return kSuccess;
}
int cuGetErrorString(int, const char** s) { *s = "reported by Kiln's fake driver"; return kSuccess; }

}  // extern "C"
