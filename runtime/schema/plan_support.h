// Helpers for everything that reads or writes Kiln plans (the runtime, the
// compiler, the tools and the tests), next to the schema they serve:
//
//   - XXH64, the 64-bit xxHash, written from its public specification
//     (https://github.com/Cyan4973/xxHash/blob/dev/doc/xxhash_spec.md): the
//     checksum of plans, executables and external weights. It reads 32 bytes
//     per round, so checking a multi-GB plan costs about as much as reading it.
//   - The checksum trailer that ends every plan file (see plan.fbs).
//   - Reads of vectors of 8-byte scalars. FlatBuffers aligns a vector's
//     length prefix to 4 bytes only when it verifies a buffer, so a damaged
//     or hand-made plan may hold an int64 vector at an address that is not
//     8-aligned; these read through memcpy instead of dereferencing it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "flatbuffers/flatbuffers.h"

namespace kiln::plan {

// The format this schema describes (Plan.format_version; see plan.fbs).
constexpr uint32_t kFormatVersion = 3;

// The most phases an entry point may have (EntryPoint.phases).
constexpr uint32_t kMaxEntryPhases = 8;

// The symbol of phase `phase` of entry point `name`: the name itself for
// phase 0, else "name.phase<phase>".
inline std::string EntryPhaseSymbol(const std::string& name, uint32_t phase) {
  return phase == 0 ? name : name + ".phase" + std::to_string(phase);
}

namespace xxh64_detail {
constexpr uint64_t kP1 = 0x9E3779B185EBCA87ull;
constexpr uint64_t kP2 = 0xC2B2AE3D27D4EB4Full;
constexpr uint64_t kP3 = 0x165667B19E3779F9ull;
constexpr uint64_t kP4 = 0x85EBCA77C2B2AE63ull;
constexpr uint64_t kP5 = 0x27D4EB2F165667C5ull;

inline uint64_t Rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
inline uint64_t Read64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return flatbuffers::EndianScalar(v);  // the spec reads little-endian lanes
}
inline uint32_t Read32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return flatbuffers::EndianScalar(v);
}
inline uint64_t Round(uint64_t acc, uint64_t lane) {
  acc += lane * kP2;
  acc = Rotl(acc, 31);
  return acc * kP1;
}
inline uint64_t Merge(uint64_t acc, uint64_t v) {
  acc ^= Round(0, v);
  return acc * kP1 + kP4;
}
// The four accumulators over whole 32-byte stripes: consumes the largest
// multiple of 32 bytes of [p, p + size); returns the bytes consumed.
inline size_t Stripes(uint64_t v[4], const uint8_t* p, size_t size) {
  size_t n = size / 32 * 32;
  uint64_t v1 = v[0], v2 = v[1], v3 = v[2], v4 = v[3];  // in registers: p may alias v
  for (const uint8_t* end = p + n; p < end; p += 32) {
    v1 = Round(v1, Read64(p));
    v2 = Round(v2, Read64(p + 8));
    v3 = Round(v3, Read64(p + 16));
    v4 = Round(v4, Read64(p + 24));
  }
  v[0] = v1, v[1] = v2, v[2] = v3, v[3] = v4;
  return n;
}
inline void InitStripes(uint64_t v[4], uint64_t seed) {
  v[0] = seed + kP1 + kP2;
  v[1] = seed + kP2;
  v[2] = seed;
  v[3] = seed - kP1;
}
// The digest of `total` bytes: the accumulators (when total >= 32) and the
// last total % 32 bytes at `tail`.
inline uint64_t Finish(const uint64_t v[4], uint64_t seed, uint64_t total, const uint8_t* p,
                       size_t tail) {
  const uint8_t* end = p + tail;
  uint64_t acc;
  if (total >= 32) {
    acc = Rotl(v[0], 1) + Rotl(v[1], 7) + Rotl(v[2], 12) + Rotl(v[3], 18);
    for (int i = 0; i < 4; ++i) acc = Merge(acc, v[i]);
  } else {
    acc = seed + kP5;
  }
  acc += total;
  for (; p + 8 <= end; p += 8) {
    acc ^= Round(0, Read64(p));
    acc = Rotl(acc, 27) * kP1 + kP4;
  }
  if (p + 4 <= end) {
    acc ^= static_cast<uint64_t>(Read32(p)) * kP1;
    acc = Rotl(acc, 23) * kP2 + kP3;
    p += 4;
  }
  for (; p < end; ++p) {
    acc ^= static_cast<uint64_t>(*p) * kP5;
    acc = Rotl(acc, 11) * kP1;
  }
  acc ^= acc >> 33;
  acc *= kP2;
  acc ^= acc >> 29;
  acc *= kP3;
  acc ^= acc >> 32;
  return acc;
}
}  // namespace xxh64_detail

// XXH64 of `size` bytes at `data` with `seed`.
inline uint64_t Xxh64(const void* data, size_t size, uint64_t seed = 0) {
  using namespace xxh64_detail;
  const uint8_t* p = static_cast<const uint8_t*>(data);
  uint64_t v[4];
  InitStripes(v, seed);
  size_t n = size >= 32 ? Stripes(v, p, size) : 0;
  return Finish(v, seed, size, p + n, size - n);
}

// XXH64 fed in pieces: the same digest as Xxh64 over their concatenation
// (for progress reports while a large range is hashed).
class Xxh64State {
 public:
  explicit Xxh64State(uint64_t seed = 0) : seed_(seed) { xxh64_detail::InitStripes(v_, seed); }
  void Update(const void* data, size_t size) {
    const uint8_t* p = static_cast<const uint8_t*>(data);
    total_ += size;
    if (buffered_ > 0) {  // complete the buffered stripe first
      size_t take = size < 32 - buffered_ ? size : 32 - buffered_;
      std::memcpy(buffer_ + buffered_, p, take);
      buffered_ += take;
      p += take;
      size -= take;
      if (buffered_ < 32) return;
      xxh64_detail::Stripes(v_, buffer_, 32);
      buffered_ = 0;
    }
    size_t n = xxh64_detail::Stripes(v_, p, size);
    std::memcpy(buffer_, p + n, size - n);
    buffered_ = size - n;
  }
  uint64_t Digest() const { return xxh64_detail::Finish(v_, seed_, total_, buffer_, buffered_); }

 private:
  uint64_t seed_;
  uint64_t v_[4];
  uint64_t total_ = 0;
  uint8_t buffer_[32] = {};
  size_t buffered_ = 0;
};

// The checksum trailer: XXH64 of everything before it, then the magic.
constexpr size_t kTrailerSize = 16;
constexpr char kTrailerMagic[9] = "KPLNXX64";

// Whether the last 16 of `size` bytes are a trailer (the magic matches);
// `*recorded` gets its checksum.
inline bool ReadTrailer(const uint8_t* data, size_t size, uint64_t* recorded) {
  if (size < kTrailerSize || std::memcmp(data + size - 8, kTrailerMagic, 8) != 0) return false;
  *recorded = xxh64_detail::Read64(data + size - kTrailerSize);
  return true;
}

// Appends the trailer to finished FlatBuffer bytes (any byte container).
template <typename Bytes>
void AppendTrailer(Bytes* bytes) {
  uint64_t h = flatbuffers::EndianScalar(Xxh64(bytes->data(), bytes->size()));
  const char* hp = reinterpret_cast<const char*>(&h);
  bytes->insert(bytes->end(), hp, hp + 8);
  bytes->insert(bytes->end(), kTrailerMagic, kTrailerMagic + 8);
}

// The checksum an Executable records (plan.fbs): XXH64 of the PTX seeded
// with XXH64 of the binary.
inline uint64_t ExecutableChecksum(const uint8_t* binary, size_t binary_size, const char* ptx,
                                   size_t ptx_size) {
  return Xxh64(ptx, ptx_size, Xxh64(binary, binary_size));
}

// Element i of a vector of scalars, read without assuming its alignment.
template <typename T>
T Load(const flatbuffers::Vector<T>* v, uint32_t i) {
  T x;
  std::memcpy(&x, v->Data() + static_cast<size_t>(i) * sizeof(T), sizeof(T));
  return flatbuffers::EndianScalar(x);
}

// The whole vector (empty when absent), read the same way.
template <typename T>
std::vector<T> ToVector(const flatbuffers::Vector<T>* v) {
  std::vector<T> out(v ? v->size() : 0);
  for (uint32_t i = 0; i < out.size(); ++i) out[i] = Load(v, i);
  return out;
}

// The compiled size of the first dimension among `specs` (TensorSpec
// pointers: a function's inputs, as the plan or kiln::Function holds them)
// that dimension symbol `sym` labels (TensorSpec.dim_symbols); 0 when none
// does. (A template so this header needs no generated code.)
template <typename Specs>
int64_t SymbolExtent(const Specs& specs, int32_t sym) {
  for (const auto* spec : specs) {
    const auto* syms = spec->dim_symbols();
    for (uint32_t d = 0; syms && spec->shape() && d < syms->size() && d < spec->shape()->size(); ++d)
      if (Load(syms, d) == sym) return Load(spec->shape(), d);
  }
  return 0;
}

}  // namespace kiln::plan
