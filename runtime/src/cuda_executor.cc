// CUDA executor: one device arena (cuMemAlloc), the weights in one device
// allocation copied once in large chunks (weight_upload.h), the module loaded
// from the cubin (or PTX), launches enqueued on the default stream. Entry
// points with tile variants (tile_launch.h) run them instead of their
// program form: dynamic shared memory set per function, tensor maps encoded
// once per session for every launch (addresses are fixed after set-up) and
// passed by value, persistent grids from the device's SM count.
#include <algorithm>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "backend.h"
#include "cuda_driver.h"
#include "plan_support.h"
#include "tile_launch.h"
#include "weight_upload.h"

namespace kiln {

#if !defined(KILN_ENABLE_CUDA)

absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(const Plan& plan, const std::vector<WeightView>&,
                                                           const SessionOptions&) {
  if (auto exe = FindExecutable(plan, plan::TargetKind::cuda); !exe.ok()) return exe.status();
  return absl::UnimplementedError("this Kiln runtime was built without CUDA support (KILN_ENABLE_CUDA=OFF)");
}

#else

namespace {
using namespace cuda;

#define KILN_CU(call, name)                                   \
  do {                                                        \
    if (auto _s = cu_->Check((call), name); !_s.ok()) return _s; \
  } while (0)

class CudaBackend final : public Backend {
 public:
  ~CudaBackend() override {
    if (!cu_ || !ctx_) return;
    cu_->cuCtxSetCurrent(ctx_);
    if (module_) cu_->cuModuleUnload(module_);
    for (CUdeviceptr p : weight_allocs_) cu_->cuMemFree_v2(p);
    if (weights_) cu_->cuMemFree_v2(weights_);
    if (arena_) cu_->cuMemFree_v2(arena_);
    cu_->cuDevicePrimaryCtxRelease_v2(device_);
  }

  absl::Status Init(const Plan& plan, const std::vector<WeightView>& weights,
                    const SessionOptions& options) {
    plan_ = &plan;
    auto exe = FindExecutable(plan, plan::TargetKind::cuda);
    if (!exe.ok()) return exe.status();
    auto driver = GetDriver();
    if (!driver.ok()) return driver.status();
    cu_ = *driver;

    int count = 0;
    KILN_CU(cu_->cuDeviceGetCount(&count), "cuDeviceGetCount");
    if (count == 0) return absl::UnavailableError("no CUDA device");
    if (options.cuda_device < 0 || options.cuda_device >= count)
      return absl::InvalidArgumentError(absl::StrCat("CUDA device ", options.cuda_device,
                                                     " does not exist (", count, " devices)"));
    KILN_CU(cu_->cuDeviceGet(&device_, options.cuda_device), "cuDeviceGet");
    KILN_CU(cu_->cuDeviceGetAttribute(&sms_, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, device_),
            "cuDeviceGetAttribute (SM count)");
    KILN_CU(cu_->cuDevicePrimaryCtxRetain(&ctx_, device_), "cuDevicePrimaryCtxRetain");
    KILN_CU(cu_->cuCtxSetCurrent(ctx_), "cuCtxSetCurrent");

    // Module: cubin when present, else PTX (JIT; keep the error log).
    const plan::Executable& x = **exe;
    std::string ptx;
    const void* image;
    const char* kind;
    if (x.binary() && x.binary()->size() > 0) {
      image = x.binary()->data();
      kind = "cubin";
    } else {
      ptx = x.ptx()->str();  // NUL-terminated copy
      image = ptx.c_str();
      kind = "PTX";
    }
    char log[8192] = {0};
    CUjit_option opts[] = {CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
    void* values[] = {log, reinterpret_cast<void*>(static_cast<uintptr_t>(sizeof(log)))};
    CUresult r = cu_->cuModuleLoadDataEx(&module_, image, 2, opts, values);
    if (r != CUDA_SUCCESS) {
      module_ = nullptr;
      absl::Status s = cu_->Check(r, "cuModuleLoadData");
      int major = 0, minor = 0;
      cu_->cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device_);
      cu_->cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device_);
      return absl::Status(s.code(), absl::StrCat(s.message(), " loading the ", kind, " for ",
                                                 x.arch()->str(), " on a sm_", major, minor, " device",
                                                 log[0] ? absl::StrCat(": ", log) : ""));
    }
    auto eps = EntryPointsByKernel(plan, x);
    for (size_t k = 0; k < eps.size(); ++k) {
      CUfunction fn = nullptr;
      r = cu_->cuModuleGetFunction(&fn, module_, eps[k]->name()->c_str());
      if (r != CUDA_SUCCESS)
        return absl::NotFoundError(absl::StrCat("CUDA executable: entry point '", eps[k]->name()->str(),
                                                "' for kernel ", k, " ('",
                                                plan.fb().kernels()->Get(k)->name()->str(), "'): ",
                                                cu_->Check(r, "cuModuleGetFunction").message()));
      functions_.push_back(fn);
      block_x_.push_back(eps[k]->block_x());
      // Tile variants: their functions, with the dynamic shared memory
      // they need allowed (above 48 KiB it must be).
      std::vector<CUfunction> tiles;
      for (uint32_t t = 0; eps[k]->tiles() && t < eps[k]->tiles()->size(); ++t) {
        const plan::TileVariant* v = eps[k]->tiles()->Get(t);
        CUfunction tf = nullptr;
        r = cu_->cuModuleGetFunction(&tf, module_, v->name()->c_str());
        if (r != CUDA_SUCCESS)
          return absl::NotFoundError(absl::StrCat("CUDA executable: tile variant '", v->name()->str(),
                                                  "' of entry point '", eps[k]->name()->str(),
                                                  "': ", cu_->Check(r, "cuModuleGetFunction").message()));
        if (v->dynamic_shared_bytes() > 0)
          KILN_CU(cu_->cuFuncSetAttribute(tf, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                          static_cast<int>(v->dynamic_shared_bytes())),
                  absl::StrCat("cuFuncSetAttribute (dynamic shared memory of '", v->name()->str(), "')"));
        tiles.push_back(tf);
      }
      tile_functions_.push_back(std::move(tiles));
    }
    entry_points_ = eps;

    // Arena, then weights (copied once).
    uint64_t arena_size = (plan.fb().arena_size() + 255) / 256 * 256;
    if (arena_size > 0) {
      KILN_CU(cu_->cuMemAlloc_v2(&arena_, arena_size), "cuMemAlloc (arena)");
      KILN_CU(cu_->cuMemsetD8_v2(arena_, 0, arena_size), "cuMemsetD8 (arena)");
    }
    if (auto s = UploadWeights(weights); !s.ok()) return s;
    std::vector<CUdeviceptr> weight_ptrs(weights.size(), 0);
    for (size_t w = 0; w < weights.size(); ++w)
      if (weights[w].size > 0) weight_ptrs[w] = weights_ + layout_.offsets[w];
    const auto* buffers = plan.fb().buffers();
    for (uint32_t b = 0; b < (buffers ? buffers->size() : 0); ++b) {
      const plan::Buffer* buf = buffers->Get(b);
      if (buf->kind() == plan::BufferKind::weight_table) {
        // A device array of device pointers, one per weight, built once.
        std::vector<CUdeviceptr> table;
        for (uint32_t w : *buf->weight_list()) table.push_back(weight_ptrs[w]);
        table_weights_[b] = table;
        CUdeviceptr p = 0;
        KILN_CU(cu_->cuMemAlloc_v2(&p, table.size() * sizeof(CUdeviceptr)), "cuMemAlloc (weight table)");
        weight_allocs_.push_back(p);
        KILN_CU(cu_->cuMemcpyHtoD_v2(p, table.data(), table.size() * sizeof(CUdeviceptr)),
                "cuMemcpyHtoD (weight table)");
        addresses_.push_back(p);
        continue;
      }
      addresses_.push_back(buf->kind() == plan::BufferKind::weight ? weight_ptrs[buf->weight()]
                                                                   : arena_ + buf->offset());
    }
    // Tensor maps of every launch of a kernel with tile variants, once.
    auto encode_all = [&](const flatbuffers::Vector<flatbuffers::Offset<plan::Launch>>* launches) {
      for (uint32_t i = 0; launches && i < launches->size(); ++i)
        if (auto s = EncodeTensorMaps(*launches->Get(i)); !s.ok()) return s;
      return absl::OkStatus();
    };
    if (auto s = encode_all(plan.fb().launches()); !s.ok()) return s;
    for (uint32_t f = 0; plan.fb().functions() && f < plan.fb().functions()->size(); ++f)
      if (auto s = encode_all(plan.fb().functions()->Get(f)->launches()); !s.ok()) return s;
    return absl::OkStatus();
  }

  // The tensor maps of `launch`'s tile variants, in variant and parameter
  // order, over the addresses of its bindings.
  absl::Status EncodeTensorMaps(const plan::Launch& launch) {
    const plan::EntryPoint* ep = entry_points_[launch.kernel()];
    if (!ep->tiles()) return absl::OkStatus();
    std::vector<CUtensorMap>& maps = tensor_maps_[&launch];
    maps.clear();
    for (const plan::TileVariant* v : *ep->tiles())
      for (const plan::TileParam* p : *v->params()) {
        if (p->kind() != plan::TileParamKind::tensor_map) continue;
        TensorMapArgs a = TensorMapArgsOf(*p->map());
        if (p->map()->rows_dim() && a.rank > 0)  // this launch's rows
          a.dims[a.rank - 1] =
              std::max<uint64_t>(1, launch.programs() / ep->programs_per_row() * ep->rows_per_unit());
        const uint32_t buffer = launch.bindings()->Get(p->binding());
        CUdeviceptr address = addresses_[buffer];
        if (p->map()->table() && a.rank >= 2) {
          // The experts' weights as one more dimension: evenly spaced.
          auto t = table_weights_.find(buffer);
          if (t == table_weights_.end() || t->second.empty())
            return absl::InvalidArgumentError(absl::StrCat("tile variant '", v->name()->str(), "': binding ",
                                                           p->binding(), " is not a weight table"));
          const std::vector<CUdeviceptr>& w = t->second;
          const uint64_t stride = w.size() > 1 ? w[1] - w[0] : 0;
          for (size_t i = 1; i < w.size(); ++i)
            if (w[i] - w[i - 1] != stride)
              return absl::FailedPreconditionError(absl::StrCat(
                  "tile variant '", v->name()->str(), "': the weights of table buffer ", buffer,
                  " are not evenly spaced in device memory (weight ", i, " is ", w[i] - w[i - 1],
                  " bytes after the one before, not ", stride, ")"));
          address = w[0];
          // (one weight: any stride past it; the inner extent rounded to 16)
          const uint64_t inner = (a.rank >= 3 ? a.strides[a.rank - 3]
                                              : DTypeSize(static_cast<DType>(p->map()->dtype()))) *
                                 a.dims[a.rank - 2];
          a.strides[a.rank - 2] = stride ? stride : (inner + 15) / 16 * 16;
        }
        uint64_t dims[5], strides[5];
        for (uint32_t d = 0; d < a.rank; ++d) dims[d] = a.dims[d];
        for (uint32_t d = 0; d + 1 < a.rank; ++d) strides[d] = a.strides[d];
        const hopper::Swizzle sw = SwizzleOf(p->map()->swizzle_bytes());
        size_t elem = DTypeSize(static_cast<DType>(p->map()->dtype()));
        std::string what = absl::StrCat("tensor map of binding ", p->binding(), " for '", v->name()->str(),
                                        "' (launch at ", launch.location() ? launch.location()->str() : "?", ")");
        if (const char* why = hopper::checkTensorMapBox(a.rank, dims, strides, a.box,
                                                        static_cast<uint32_t>(elem), address, sw))
          return absl::InvalidArgumentError(absl::StrCat(what, ": ", why));
        CUtensorMap map;
        KILN_CU(cu_->cuTensorMapEncodeTiled(&map, a.dtype, a.rank, reinterpret_cast<void*>(address), a.dims,
                                            a.strides, a.box, a.element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                                            a.swizzle, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                                            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE),
                absl::StrCat("cuTensorMapEncodeTiled (", what, ")"));
        maps.push_back(map);
      }
    return absl::OkStatus();
  }

  // A launch through its tile variants: one call per run of rows its
  // programs cover (tile_launch.h), through the variant that holds the run,
  // row-indexed bindings advanced to the run's first row.
  absl::Status LaunchTiles(const plan::Launch& la, const LaunchWindow* window) {
    const plan::EntryPoint* ep = entry_points_[la.kernel()];
    std::vector<std::pair<int64_t, int64_t>> whole{{0, static_cast<int64_t>(la.programs())}};
    auto it = tensor_maps_.find(&la);
    if (it == tensor_maps_.end())
      return absl::InternalError(absl::StrCat("launch of '", ep->name()->str(), "' has no tensor maps"));
    KILN_CU(cu_->cuCtxSetCurrent(ctx_), "cuCtxSetCurrent");
    const uint64_t unit = ep->rows_per_unit();
    for (auto [u0, u1] : TileRowRuns(window ? window->ranges : whole, ep->programs_per_row())) {
      const uint64_t r0 = u0 * unit, r1 = u1 * unit;
      const uint64_t rows = r1 - r0;
      const int vi = ChooseTileVariant(*ep, rows);
      if (vi < 0)
        return absl::InternalError(absl::StrCat("no tile variant of '", ep->name()->str(), "' holds ", rows, " rows"));
      const plan::TileVariant* v = ep->tiles()->Get(vi);
      // Maps of the variants before this one come first.
      size_t map = 0;
      for (int u = 0; u < vi; ++u)
        for (const plan::TileParam* p : *ep->tiles()->Get(u)->params())
          map += p->kind() == plan::TileParamKind::tensor_map;
      std::vector<uint64_t> storage(v->params()->size());
      std::vector<void*> params(v->params()->size());
      for (uint32_t i = 0; i < v->params()->size(); ++i) {
        const plan::TileParam* p = v->params()->Get(i);
        switch (p->kind()) {
          case plan::TileParamKind::tensor_map:
            params[i] = &it->second[map++];
            continue;
          case plan::TileParamKind::binding:
            storage[i] = addresses_[la.bindings()->Get(p->binding())] + r0 * p->row_bytes();
            break;
          case plan::TileParamKind::rows:
            storage[i] = rows;
            break;
          case plan::TileParamKind::first_row:
            storage[i] = r0;
            break;
        }
        params[i] = &storage[i];
      }
      if (auto s = cu_->Check(cu_->cuLaunchKernel(tile_functions_[la.kernel()][vi], TileGrid(*v, rows, sms_), 1,
                                                  1, v->threads(), 1, 1, v->dynamic_shared_bytes(), nullptr,
                                                  params.data(), nullptr),
                              absl::StrCat("cuLaunchKernel ('", v->name()->str(), "')"));
          !s.ok())
        return s;
    }
    return absl::OkStatus();
  }

  // Every weight into one allocation (256-aligned offsets), in chunks of
  // kUploadChunk bytes through two pinned staging buffers: the host fills one
  // while the other is copied (cuMemcpyHtoDAsync), one copy per chunk. Without
  // pinned memory, one pageable buffer and synchronous copies.
  absl::Status UploadWeights(const std::vector<WeightView>& weights) {
    constexpr uint64_t kUploadChunk = 64ull << 20;
    std::vector<uint64_t> sizes;
    for (const WeightView& w : weights) sizes.push_back(w.size);
    layout_ = LayOutWeights(sizes, 256);
    if (layout_.total == 0) return absl::OkStatus();
    KILN_CU(cu_->cuMemAlloc_v2(&weights_, layout_.total),
            absl::StrCat("cuMemAlloc (weights, ", layout_.total, " bytes)"));
    uint64_t chunk = std::min(kUploadChunk, layout_.total);
    uint64_t chunks = (layout_.total + chunk - 1) / chunk;
    struct Staging {
      const Driver* cu;
      void* pinned[2] = {nullptr, nullptr};
      CUstream stream = nullptr;
      CUevent copied[2] = {nullptr, nullptr};
      ~Staging() {
        if (stream) cu->cuStreamSynchronize(stream);
        for (CUevent e : copied)
          if (e) cu->cuEventDestroy_v2(e);
        if (stream) cu->cuStreamDestroy_v2(stream);
        for (void* p : pinned)
          if (p) cu->cuMemFreeHost(p);
      }
    } st{cu_};
    bool pinned = cu_->cuMemAllocHost_v2(&st.pinned[0], chunk) == CUDA_SUCCESS &&
                  (chunks == 1 || cu_->cuMemAllocHost_v2(&st.pinned[1], chunk) == CUDA_SUCCESS);
    if (!pinned) {
      std::vector<uint8_t> pageable(chunk);
      for (uint64_t c = 0; c < chunks; ++c) {
        uint64_t n = FillChunk(layout_, weights, c, chunk, pageable.data());
        KILN_CU(cu_->cuMemcpyHtoD_v2(weights_ + c * chunk, pageable.data(), n), "cuMemcpyHtoD (weights)");
      }
      return absl::OkStatus();
    }
    KILN_CU(cu_->cuStreamCreate(&st.stream, 0), "cuStreamCreate (weight upload)");
    for (CUevent& e : st.copied) KILN_CU(cu_->cuEventCreate(&e, 0), "cuEventCreate (weight upload)");
    for (uint64_t c = 0; c < chunks; ++c) {
      int b = static_cast<int>(c % 2);
      // Staging buffer b is free once its previous chunk's copy is done.
      if (c >= 2) KILN_CU(cu_->cuEventSynchronize(st.copied[b]), "cuEventSynchronize (weight upload)");
      auto* staging = static_cast<uint8_t*>(st.pinned[b]);
      uint64_t n = FillChunk(layout_, weights, c, chunk, staging);
      KILN_CU(cu_->cuMemcpyHtoDAsync_v2(weights_ + c * chunk, staging, n, st.stream),
              "cuMemcpyHtoDAsync (weights)");
      KILN_CU(cu_->cuEventRecord(st.copied[b], st.stream), "cuEventRecord (weight upload)");
    }
    KILN_CU(cu_->cuStreamSynchronize(st.stream), "cuStreamSynchronize (weight upload)");
    return absl::OkStatus();
  }

  absl::Status CopyIn(uint64_t offset, const void* src, size_t size) override {
    if (size == 0) return absl::OkStatus();
    KILN_CU(cu_->cuCtxSetCurrent(ctx_), "cuCtxSetCurrent");
    KILN_CU(cu_->cuMemcpyHtoD_v2(arena_ + offset, src, size), "cuMemcpyHtoD");
    return absl::OkStatus();
  }
  absl::Status CopyOut(uint64_t offset, void* dst, size_t size) override {
    if (size == 0) return absl::OkStatus();
    KILN_CU(cu_->cuCtxSetCurrent(ctx_), "cuCtxSetCurrent");
    KILN_CU(cu_->cuMemcpyDtoH_v2(dst, arena_ + offset, size), "cuMemcpyDtoH");
    return absl::OkStatus();
  }

  absl::Status Zero(uint64_t offset, size_t size) override {
    if (size == 0) return absl::OkStatus();
    KILN_CU(cu_->cuCtxSetCurrent(ctx_), "cuCtxSetCurrent");
    KILN_CU(cu_->cuMemsetD8_v2(arena_ + offset, 0, size), "cuMemsetD8 (state)");
    return absl::OkStatus();
  }

  // One cuLaunchKernel per program range: the whole grid, or each range of
  // a token window (the given tokens' programs) with the window's scalars.
  absl::Status Launch(const plan::Launch& launch, const LaunchWindow* window) override {
    const plan::Launch* la = &launch;
    uint64_t programs = la->programs();
    if (programs == 0) return absl::OkStatus();
    if (!tile_functions_[la->kernel()].empty()) return LaunchTiles(launch, window);
    uint32_t nb = la->bindings() ? la->bindings()->size() : 0;
    uint32_t ns = la->scalars() ? la->scalars()->size() : 0;
    // Parameter storage: buffers, scalars, begin, end (all 8 bytes).
    std::vector<uint64_t> storage(nb + ns + 2);
    std::vector<void*> params(storage.size());
    for (uint32_t i = 0; i < nb; ++i) storage[i] = addresses_[la->bindings()->Get(i)];
    for (uint32_t i = 0; i < ns; ++i)
      storage[nb + i] = static_cast<uint64_t>(window ? window->scalars[i] : plan::Load(la->scalars(), i));
    for (size_t i = 0; i < storage.size(); ++i) params[i] = &storage[i];
    uint32_t block = la->block_x() ? la->block_x() : block_x_[la->kernel()];
    std::vector<std::pair<int64_t, int64_t>> whole{{0, static_cast<int64_t>(programs)}};
    KILN_CU(cu_->cuCtxSetCurrent(ctx_), "cuCtxSetCurrent");
    for (auto [begin, end] : window ? window->ranges : whole) {
      if (end <= begin) continue;
      storage[nb + ns] = static_cast<uint64_t>(begin);
      storage[nb + ns + 1] = static_cast<uint64_t>(end);
      uint64_t grid = (static_cast<uint64_t>(end - begin) + block - 1) / block;
      if (grid > 0x7fffffffull)
        return absl::InvalidArgumentError(absl::StrCat("grid of ", grid, " blocks exceeds the CUDA limit"));
      if (auto s = cu_->Check(cu_->cuLaunchKernel(functions_[la->kernel()], static_cast<unsigned>(grid), 1, 1,
                                                  block, 1, 1, 0, nullptr, params.data(), nullptr),
                              "cuLaunchKernel");
          !s.ok())
        return s;
    }
    return absl::OkStatus();
  }

  absl::Status Synchronize() override {
    KILN_CU(cu_->cuCtxSetCurrent(ctx_), "cuCtxSetCurrent");
    KILN_CU(cu_->cuCtxSynchronize(), "cuCtxSynchronize");
    return absl::OkStatus();
  }

 private:
  const Plan* plan_ = nullptr;
  const Driver* cu_ = nullptr;
  CUdevice device_ = 0;
  CUcontext ctx_ = nullptr;
  CUmodule module_ = nullptr;
  std::vector<CUfunction> functions_;
  std::vector<uint32_t> block_x_;
  std::vector<const plan::EntryPoint*> entry_points_;  // per kernel
  std::vector<std::vector<CUfunction>> tile_functions_;  // per kernel, per variant
  // Per launch with tile variants: its tensor maps (tile_launch.h order).
  std::unordered_map<const plan::Launch*, std::vector<CUtensorMap>> tensor_maps_;
  // Per weight-table buffer: its weights' device addresses.
  std::unordered_map<uint32_t, std::vector<CUdeviceptr>> table_weights_;
  int sms_ = 0;
  CUdeviceptr arena_ = 0;
  CUdeviceptr weights_ = 0;  // every weight, at layout_.offsets
  WeightLayout layout_;
  std::vector<CUdeviceptr> weight_allocs_;  // weight tables
  std::vector<CUdeviceptr> addresses_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(const Plan& plan,
                                                           const std::vector<WeightView>& weights,
                                                           const SessionOptions& options) {
  auto backend = std::make_unique<CudaBackend>();
  if (auto s = backend->Init(plan, weights, options); !s.ok()) return s;
  return std::unique_ptr<Backend>(std::move(backend));
}

#endif  // KILN_ENABLE_CUDA

}  // namespace kiln
