#include "cuda_driver.h"

#include <dlfcn.h>

#include <mutex>

#include "absl/strings/str_cat.h"

namespace kiln::cuda {

absl::Status Driver::Check(CUresult result, std::string_view call) const {
  if (result == CUDA_SUCCESS) return absl::OkStatus();
  const char* name = nullptr;
  const char* text = nullptr;
  if (cuGetErrorName) cuGetErrorName(result, &name);
  if (cuGetErrorString) cuGetErrorString(result, &text);
  return absl::InternalError(absl::StrCat(absl::string_view(call.data(), call.size()), ": ", name ? name : absl::StrCat("CUresult ", result),
                                          text ? absl::StrCat(" (", text, ")") : ""));
}

absl::StatusOr<const Driver*> GetDriver() {
  static std::once_flag once;
  static Driver driver;
  static absl::Status status;
  std::call_once(once, [] {
    void* lib = ::dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      const char* e = ::dlerror();
      status = absl::UnavailableError(absl::StrCat(
          "CUDA driver not available: libcuda.so.1 not found", e ? absl::StrCat(" (", e, ")") : ""));
      return;
    }
#define KILN_CUDA_LOAD(name, params)                                                    \
  driver.name = reinterpret_cast<decltype(driver.name)>(::dlsym(lib, #name));           \
  if (!driver.name) {                                                                   \
    status = absl::UnavailableError(                                                    \
        "CUDA driver not available: libcuda.so.1 lacks symbol " #name " (driver too old)"); \
    return;                                                                             \
  }
    KILN_CUDA_SYMBOLS(KILN_CUDA_LOAD)
#undef KILN_CUDA_LOAD
    CUresult r = driver.cuInit(0);
    if (r != CUDA_SUCCESS) {
      absl::Status e = driver.Check(r, "cuInit");
      status = absl::UnavailableError(r == 100 /*CUDA_ERROR_NO_DEVICE*/
                                          ? absl::StrCat("no CUDA device (", e.message(), ")")
                                          : absl::StrCat("CUDA driver not available: ", e.message()));
      return;
    }
    // The library stays loaded for the life of the process.
  });
  if (!status.ok()) return status;
  return &driver;
}

}  // namespace kiln::cuda
