// Reading tokenizer.json (internal): nlohmann::json values with their JSON
// path, so that every error names where it is ("pre_tokenizer.pretokenizers[1]
// .type: unsupported pre-tokenizer type 'Whitespace' ...").
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace kiln::tok {

using Json = nlohmann::json;

inline std::string JoinPath(const std::string& path, const char* key) {
  return path.empty() ? std::string(key) : absl::StrCat(path, ".", key);
}
inline std::string IndexPath(const std::string& path, size_t i) {
  return absl::StrCat(path, "[", i, "]");
}

// A short rendering of a JSON value for errors.
inline std::string Describe(const Json& value) {
  std::string s = value.dump(-1, ' ', false, Json::error_handler_t::replace);
  return s.size() > 80 ? s.substr(0, 77) + "..." : s;
}

inline absl::Status JsonError(const std::string& path, const std::string& message) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", message));
}

// The member `key` of object `obj`, or nullptr when it is absent or null.
inline const Json* OptionalMember(const Json& obj, const char* key) {
  auto it = obj.find(key);
  return it == obj.end() || it->is_null() ? nullptr : &*it;
}

inline absl::StatusOr<const Json*> Member(const Json& obj, const char* key,
                                          const std::string& path) {
  const Json* v = OptionalMember(obj, key);
  if (!v) return JsonError(JoinPath(path, key), "missing");
  return v;
}

inline absl::StatusOr<std::string> GetString(const Json& obj, const char* key,
                                             const std::string& path) {
  auto v = Member(obj, key, path);
  if (!v.ok()) return v.status();
  if (!(*v)->is_string())
    return JsonError(JoinPath(path, key), absl::StrCat("expected a string, got ", Describe(**v)));
  return (*v)->get<std::string>();
}

// A bool member; `fallback` when it is absent (an error if there is none).
inline absl::StatusOr<bool> GetBool(const Json& obj, const char* key, const std::string& path,
                                    std::optional<bool> fallback = std::nullopt) {
  const Json* v = OptionalMember(obj, key);
  if (!v) {
    if (fallback) return *fallback;
    return JsonError(JoinPath(path, key), "missing");
  }
  if (!v->is_boolean())
    return JsonError(JoinPath(path, key),
                     absl::StrCat("expected true or false, got ", Describe(*v)));
  return v->get<bool>();
}

// A non-negative integer member no larger than `max`.
inline absl::StatusOr<int64_t> GetCount(const Json& obj, const char* key, const std::string& path,
                                        int64_t max) {
  auto v = Member(obj, key, path);
  if (!v.ok()) return v.status();
  if (!(*v)->is_number_unsigned() || (*v)->get<uint64_t>() > static_cast<uint64_t>(max)) {
    return JsonError(JoinPath(path, key), absl::StrCat("expected an integer in [0, ", max,
                                                       "], got ", Describe(**v)));
  }
  return (*v)->get<int64_t>();
}

// The single character of a string member (Rust `char` fields).
inline absl::StatusOr<std::string> GetChar(const Json& obj, const char* key,
                                           const std::string& path) {
  auto s = GetString(obj, key, path);
  if (!s.ok()) return s.status();
  unsigned char c = s->empty() ? 0 : static_cast<unsigned char>((*s)[0]);
  size_t len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
  if (s->empty() || s->size() != len)
    return JsonError(JoinPath(path, key), absl::StrCat("expected one character, got \"", *s, "\""));
  return s;
}

// The "type" of a component object.
inline absl::StatusOr<std::string> GetType(const Json& obj, const std::string& path) {
  if (!obj.is_object())
    return JsonError(path, absl::StrCat("expected an object, got ", Describe(obj)));
  return GetString(obj, "type", path);
}

inline absl::Status Unsupported(const std::string& path, const char* what, const std::string& type,
                                const char* supported) {
  return JsonError(JoinPath(path, "type"),
                   absl::StrCat("unsupported ", what, " type '", type, "' (Kiln supports ",
                                supported, ")"));
}

// The array member `key` of `obj`, each element parsed by
// `parse(element, element_path)` into a StatusOr.
template <typename Parse>
auto ParseEach(const Json& obj, const char* key, const std::string& path, Parse parse)
    -> absl::StatusOr<std::vector<typename decltype(parse(obj, path))::value_type>> {
  auto list = Member(obj, key, path);
  if (!list.ok()) return list.status();
  std::string lpath = JoinPath(path, key);
  if (!(*list)->is_array()) return JsonError(lpath, "expected an array");
  std::vector<typename decltype(parse(obj, path))::value_type> out;
  for (size_t i = 0; i < (*list)->size(); ++i) {
    auto item = parse((**list)[i], IndexPath(lpath, i));
    if (!item.ok()) return item.status();
    out.push_back(std::move(*item));
  }
  return out;
}

// The two big members of a BPE tokenizer.json, model.vocab and model.merges,
// as ParseTokenizerJson collects them (most of an 8 MB file; kept out of the
// DOM, whose std::map nodes would cost most of the load time).
struct BpeTables {
  bool has_vocab = false, has_merges = false;
  std::vector<std::pair<std::string, uint64_t>> vocab;      // token, id
  std::vector<std::pair<std::string, std::string>> merges;  // [["a", "b"], ...]
  std::vector<std::string> merge_lines;                     // the older ["a b", ...]
};

// Parses tokenizer.json text into `root` (without model.vocab and
// model.merges) and `tables`. Errors name the JSON path or byte position.
absl::Status ParseTokenizerJson(std::string_view text, Json* root, BpeTables* tables);

}  // namespace kiln::tok
