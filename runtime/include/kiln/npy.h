// NumPy .npy files (format versions 1, 2 and 3; little-endian, C order).
// Supported dtypes: <f4, <f2, <i4, <i8, |u1 (bf16 has no numpy dtype).
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kiln/tensor.h"

namespace kiln {

// Parses an in-memory .npy image. `what` names the source in errors.
absl::StatusOr<HostTensor> ParseNpy(std::string_view bytes, std::string_view what);
absl::StatusOr<HostTensor> ReadNpy(const std::string& path);
// Serializes as .npy version 1.0 (2.0 if the header does not fit).
absl::StatusOr<std::string> EncodeNpy(const HostTensor& tensor);
// Writes atomically: a temporary file in the same directory, then rename.
absl::Status WriteNpy(const std::string& path, const HostTensor& tensor);

}  // namespace kiln
