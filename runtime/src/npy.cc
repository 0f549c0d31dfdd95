// NumPy .npy reader/writer. Format: magic "\x93NUMPY", major, minor, header
// length (u16 for v1, u32 for v2/v3), then a Python dict literal header.
#include "kiln/npy.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/strings/match.h"
#include <sys/stat.h>
#include "mapped_file.h"

namespace kiln {
namespace {

constexpr char kMagic[] = "\x93NUMPY";

struct NpyType {
  const char* descr;
  DType dtype;
};
constexpr NpyType kTypes[] = {
    {"<f4", DType::kF32}, {"<f2", DType::kF16}, {"<i4", DType::kI32},
    {"<i8", DType::kI64}, {"|u1", DType::kU8},  {"<u1", DType::kU8},
};

// Finds `'key':` in the header dict and returns the text after it.
bool FindKey(absl::string_view header, absl::string_view key, absl::string_view* rest) {
  std::string quoted1 = absl::StrCat("'", key, "'");
  std::string quoted2 = absl::StrCat("\"", key, "\"");
  size_t pos = header.find(quoted1);
  size_t len = quoted1.size();
  if (pos == absl::string_view::npos) pos = header.find(quoted2);
  if (pos == absl::string_view::npos) return false;
  absl::string_view r = header.substr(pos + len);
  r = absl::StripLeadingAsciiWhitespace(r);
  if (r.empty() || r[0] != ':') return false;
  *rest = absl::StripLeadingAsciiWhitespace(r.substr(1));
  return true;
}

}  // namespace

absl::StatusOr<HostTensor> ParseNpy(std::string_view bytes_in, std::string_view what_in) {
  absl::string_view bytes(bytes_in.data(), bytes_in.size());
  absl::string_view what(what_in.data(), what_in.size());
  auto err = [&](absl::string_view msg) {
    return absl::InvalidArgumentError(absl::StrCat("npy '", what, "': ", msg));
  };
  if (bytes.size() < 10 || bytes.substr(0, 6) != absl::string_view(kMagic, 6))
    return err(bytes.size() < 10 ? "truncated file (no header)" : "not a .npy file (bad magic)");
  uint8_t major = static_cast<uint8_t>(bytes[6]);
  size_t header_len, header_start;
  if (major == 1) {
    header_len = static_cast<uint8_t>(bytes[8]) | (static_cast<uint8_t>(bytes[9]) << 8);
    header_start = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) return err("truncated file (no header)");
    header_len = 0;
    for (int i = 3; i >= 0; --i) header_len = (header_len << 8) | static_cast<uint8_t>(bytes[8 + i]);
    header_start = 12;
  } else {
    return err(absl::StrCat("unsupported format version ", major));
  }
  if (bytes.size() < header_start + header_len) return err("truncated file (header cut short)");
  absl::string_view header = bytes.substr(header_start, header_len);

  absl::string_view rest;
  if (!FindKey(header, "descr", &rest) || rest.empty() || (rest[0] != '\'' && rest[0] != '"'))
    return err("header has no 'descr'");
  size_t close = rest.find(rest[0], 1);
  if (close == absl::string_view::npos) return err("malformed 'descr'");
  absl::string_view descr = rest.substr(1, close - 1);
  const NpyType* type = nullptr;
  for (const auto& t : kTypes)
    if (descr == t.descr) type = &t;
  if (!type) {
    if (!descr.empty() && descr[0] == '>')
      return err(absl::StrCat("big-endian dtype '", descr, "' is not supported; save little-endian"));
    return err(absl::StrCat("unsupported dtype '", descr,
                            "' (supported: <f4, <f2, <i4, <i8, |u1)"));
  }

  if (!FindKey(header, "fortran_order", &rest)) return err("header has no 'fortran_order'");
  if (absl::StartsWith(rest, "True"))
    return err("Fortran-order arrays are not supported; save with np.ascontiguousarray");
  if (!absl::StartsWith(rest, "False")) return err("malformed 'fortran_order'");

  if (!FindKey(header, "shape", &rest) || rest.empty() || rest[0] != '(')
    return err("header has no 'shape'");
  size_t paren = rest.find(')');
  if (paren == absl::string_view::npos) return err("malformed 'shape'");
  HostTensor t;
  t.dtype = type->dtype;
  for (absl::string_view part : absl::StrSplit(rest.substr(1, paren - 1), ',')) {
    part = absl::StripAsciiWhitespace(part);
    if (part.empty()) continue;
    int64_t dim;
    if (!absl::SimpleAtoi(part, &dim) || dim < 0)
      return err(absl::StrCat("malformed dimension '", part, "' in 'shape'"));
    t.shape.push_back(dim);
  }
  size_t elem = DTypeSize(t.dtype);
  uint64_t count = 1;
  for (int64_t d : t.shape) {
    if (d != 0 && count > (UINT64_MAX / elem) / static_cast<uint64_t>(d))
      return err("shape too large");
    count *= static_cast<uint64_t>(d);
  }
  uint64_t need = count * elem;
  size_t data_start = header_start + header_len;
  if (bytes.size() - data_start < need)
    return err(absl::StrCat("truncated data: shape ", ShapeToString(t.shape), " needs ", need,
                            " bytes, file has ", bytes.size() - data_start));
  t.bytes.assign(bytes.data() + data_start, bytes.data() + data_start + need);
  return t;
}

absl::StatusOr<HostTensor> ReadNpy(const std::string& path) {
  auto file = MappedFile::Open(path);
  if (!file.ok()) return file.status();
  std::string_view bytes(reinterpret_cast<const char*>((*file)->data()), (*file)->size());
  return ParseNpy(bytes, path);
}

absl::StatusOr<std::string> EncodeNpy(const HostTensor& t) {
  const char* descr = nullptr;
  for (const auto& type : kTypes)
    if (type.dtype == t.dtype) { descr = type.descr; break; }
  if (!descr)
    return absl::InvalidArgumentError(
        absl::StrCat("cannot write ", DTypeName(t.dtype), " tensors as .npy"));
  uint64_t expected = static_cast<uint64_t>(t.num_elements()) * DTypeSize(t.dtype);
  if (t.bytes.size() != expected)
    return absl::InvalidArgumentError(absl::StrCat("tensor ", DescribeTensor(t.dtype, t.shape),
                                                   " has ", t.bytes.size(), " bytes, expected ",
                                                   expected));
  std::string shape = absl::StrJoin(t.shape, ", ");
  if (t.shape.size() == 1) shape += ",";
  std::string dict = absl::StrCat("{'descr': '", descr, "', 'fortran_order': False, 'shape': (",
                                  shape, "), }");
  // Pad so that magic + length + header + '\n' is a multiple of 64.
  bool v2 = dict.size() + 1 + 10 > 65535;
  size_t prefix = v2 ? 12 : 10;
  size_t total = prefix + dict.size() + 1;
  dict.append((64 - total % 64) % 64, ' ');
  dict.push_back('\n');
  std::string out(kMagic, 6);
  out.push_back(v2 ? 2 : 1);
  out.push_back(0);
  size_t len = dict.size();
  for (size_t i = 0; i < (v2 ? 4u : 2u); ++i) out.push_back(static_cast<char>((len >> (8 * i)) & 0xff));
  out += dict;
  out.append(reinterpret_cast<const char*>(t.bytes.data()), t.bytes.size());
  return out;
}

absl::Status WriteNpy(const std::string& path, const HostTensor& tensor) {
  auto encoded = EncodeNpy(tensor);
  if (!encoded.ok()) return encoded.status();
  std::string tmp = path + ".tmpXXXXXX";
  int fd = ::mkstemp(tmp.data());
  if (fd < 0)
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create '", tmp, "': ", std::strerror(errno)));
  const char* p = encoded->data();
  size_t left = encoded->size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int e = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return absl::InternalError(absl::StrCat("cannot write '", path, "': ", std::strerror(e)));
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  ::fchmod(fd, 0644);
  if (::close(fd) != 0 || ::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    return absl::InternalError(absl::StrCat("cannot write '", path, "': ", std::strerror(e)));
  }
  return absl::OkStatus();
}

}  // namespace kiln
