// CPU executor: the executable is an ELF shared object, loaded from memory
// (memfd_create + dlopen of /proc/self/fd/N, or a temporary file), whose
// entry points run a range of programs of one launch.
#include <dlfcn.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "backend.h"
#include "cpu_features.h"
#include "plan_support.h"
#include "thread_pool.h"

namespace kiln {
namespace {

using EntryFn = void (*)(void** buffers, const int64_t* scalars, int64_t program_begin,
                         int64_t program_end);

absl::Status WriteAll(int fd, const uint8_t* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return absl::InternalError(absl::StrCat("write: ", std::strerror(errno)));
    p += w;
    n -= static_cast<size_t>(w);
  }
  return absl::OkStatus();
}

// A dlopen'ed shared object. The memfd stays open while the library is
// loaded so that its /proc/self/fd/N name stays unique.
class SharedObject {
 public:
  static absl::StatusOr<std::unique_ptr<SharedObject>> Load(const uint8_t* data, size_t size) {
    std::unique_ptr<SharedObject> so(new SharedObject());
    std::string path;
    int fd = ::memfd_create("kiln-cpu-executable", MFD_CLOEXEC);
    if (fd >= 0) {
      if (auto s = WriteAll(fd, data, size); !s.ok()) {
        ::close(fd);
        return s;
      }
      so->fd_ = fd;
      path = absl::StrCat("/proc/self/fd/", fd);
      so->handle_ = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    }
    if (!so->handle_) {
      // Fallback: a temporary file (e.g. no memfd, or /proc not mounted).
      std::string memfd_error = so->fd_ >= 0 ? absl::StrCat(" (memfd: ", ::dlerror(), ")") : "";
      const char* tmpdir = std::getenv("TMPDIR");
      path = absl::StrCat(tmpdir && *tmpdir ? tmpdir : "/tmp", "/kiln-cpu-XXXXXX.so");
      int tfd = ::mkstemps(path.data(), 3);
      if (tfd < 0)
        return absl::InternalError(absl::StrCat("cannot create a temporary file for the CPU executable: ",
                                                std::strerror(errno), memfd_error));
      absl::Status s = WriteAll(tfd, data, size);
      ::close(tfd);
      if (s.ok()) so->handle_ = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
      const char* dl_error = so->handle_ ? nullptr : ::dlerror();
      ::unlink(path.c_str());
      if (!s.ok()) return s;
      if (!so->handle_)
        return absl::InvalidArgumentError(absl::StrCat("cannot load the CPU executable: ",
                                                       dl_error ? dl_error : "dlopen failed",
                                                       memfd_error));
    }
    return so;
  }
  ~SharedObject() {
    if (handle_) ::dlclose(handle_);
    if (fd_ < 0) return;
    // The dynamic loader knows the object by its name, /proc/self/fd/N; an
    // object that stays loaded after dlclose (linked with -z nodelete) keeps
    // that name, and a later dlopen of the same name would return it, not
    // the new executable. Keep the fd (and so the name) taken while it lives.
    std::string path = absl::StrCat("/proc/self/fd/", fd_);
    if (void* resident = ::dlopen(path.c_str(), RTLD_NOW | RTLD_NOLOAD)) {
      ::dlclose(resident);
      return;
    }
    ::close(fd_);
  }
  void* handle() const { return handle_; }

 private:
  SharedObject() = default;
  void* handle_ = nullptr;
  int fd_ = -1;
};

class CpuBackend final : public Backend {
 public:
  ~CpuBackend() override { std::free(arena_); }

  absl::Status Init(const Plan& plan, const std::vector<WeightView>& weights,
                    const SessionOptions& options) {
    auto exe = FindExecutable(plan, plan::TargetKind::cpu);
    if (!exe.ok()) return exe.status();
    std::vector<std::string> features;
    for (uint32_t i = 0; (*exe)->features() && i < (*exe)->features()->size(); ++i)
      features.push_back((*exe)->features()->Get(i)->str());
    if (auto s = CheckHostCanRun("the plan's CPU code", (*exe)->arch()->string_view(),
                                 (*exe)->cpu() ? (*exe)->cpu()->string_view() : "", features);
        !s.ok())
      return s;
    auto so = SharedObject::Load((*exe)->binary()->data(), (*exe)->binary()->size());
    if (!so.ok()) return so.status();
    so_ = std::move(*so);
    auto eps = EntryPointsByKernel(plan, **exe);
    for (size_t k = 0; k < eps.size(); ++k) {
      std::vector<EntryFn> phases;
      for (uint32_t ph = 0; ph < eps[k]->phases(); ++ph) {
        std::string name = plan::EntryPhaseSymbol(eps[k]->name()->str(), ph);
        ::dlerror();
        void* sym = ::dlsym(so_->handle(), name.c_str());
        if (!sym)
          return absl::NotFoundError(absl::StrCat(
              "CPU executable: entry point '", name, "' for kernel ", k, " ('",
              plan.fb().kernels()->Get(k)->name()->str(), "') not found in the shared object"));
        phases.push_back(reinterpret_cast<EntryFn>(sym));
      }
      entries_.push_back(std::move(phases));
    }
    uint64_t size = (plan.fb().arena_size() + 255) / 256 * 256;
    arena_ = static_cast<uint8_t*>(std::aligned_alloc(256, size > 0 ? size : 256));
    if (!arena_)
      return absl::ResourceExhaustedError(absl::StrCat("cannot allocate the arena (", size, " bytes)"));
    std::memset(arena_, 0, size);
    // Host address of every buffer.
    const auto* buffers = plan.fb().buffers();
    for (uint32_t b = 0; b < (buffers ? buffers->size() : 0); ++b) {
      const plan::Buffer* buf = buffers->Get(b);
      if (buf->kind() == plan::BufferKind::weight_table) {
        // A table of host pointers, one per weight, built once.
        auto table = std::make_unique<std::vector<void*>>();
        for (uint32_t w : *buf->weight_list())
          table->push_back(const_cast<uint8_t*>(weights[w].data));
        addresses_.push_back(table->data());
        tables_.push_back(std::move(table));
        continue;
      }
      addresses_.push_back(buf->kind() == plan::BufferKind::weight
                               ? const_cast<uint8_t*>(weights[buf->weight()].data)
                               : arena_ + buf->offset());
    }
    pool_ = std::make_unique<ThreadPool>(options.num_threads);
    return absl::OkStatus();
  }

  absl::Status CopyIn(uint64_t offset, const void* src, size_t size) override {
    std::memcpy(arena_ + offset, src, size);
    return absl::OkStatus();
  }
  absl::Status CopyOut(uint64_t offset, void* dst, size_t size) override {
    std::memcpy(dst, arena_ + offset, size);
    return absl::OkStatus();
  }

  absl::Status Zero(uint64_t offset, size_t size) override {
    std::memset(arena_ + offset, 0, size);
    return absl::OkStatus();
  }

  absl::Status Launch(const plan::Launch& launch, const LaunchWindow* window) override {
    const plan::Launch* la = &launch;
    void* ptrs[64];
    std::vector<void*> heap;
    uint32_t nb = la->bindings() ? la->bindings()->size() : 0;
    void** bufs = ptrs;
    if (nb > 64) {
      heap.resize(nb);
      bufs = heap.data();
    }
    for (uint32_t i = 0; i < nb; ++i) bufs[i] = addresses_[la->bindings()->Get(i)];
    // An aligned copy: the plan's int64 vector may be only 4-aligned.
    uint32_t ns = la->scalars() ? la->scalars()->size() : 0;
    int64_t scalar_storage[16];
    std::vector<int64_t> scalar_heap(ns > 16 ? ns : 0);
    int64_t* scalars = ns > 16 ? scalar_heap.data() : scalar_storage;
    for (uint32_t i = 0; i < ns; ++i) scalars[i] = plan::Load(la->scalars(), i);
    // Each phase over every range before the next phase (EntryPoint.phases):
    // ParallelFor returns once all its chunks have.
    for (EntryFn fn : entries_[la->kernel()]) {
      if (!window) {
        int64_t programs = static_cast<int64_t>(la->programs());
        pool_->ParallelFor(programs, [&](int64_t begin, int64_t end) { fn(bufs, scalars, begin, end); });
        continue;
      }
      const int64_t* sc = window->scalars.data();
      for (auto [first, last] : window->ranges)
        pool_->ParallelFor(last - first, [&](int64_t begin, int64_t end) {
          fn(bufs, sc, first + begin, first + end);
        });
    }
    return absl::OkStatus();
  }
  absl::Status Synchronize() override { return absl::OkStatus(); }

 private:
  std::unique_ptr<SharedObject> so_;
  std::vector<std::vector<EntryFn>> entries_;  // per kernel, its phases
  uint8_t* arena_ = nullptr;
  std::vector<void*> addresses_;
  std::vector<std::unique_ptr<std::vector<void*>>> tables_;
  std::unique_ptr<ThreadPool> pool_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> CreateCpuBackend(const Plan& plan,
                                                          const std::vector<WeightView>& weights,
                                                          const SessionOptions& options) {
  auto backend = std::make_unique<CpuBackend>();
  if (auto s = backend->Init(plan, weights, options); !s.ok()) return s;
  return std::unique_ptr<Backend>(std::move(backend));
}

}  // namespace kiln
