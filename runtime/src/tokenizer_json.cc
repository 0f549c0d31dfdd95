#include "tokenizer_json.h"

namespace kiln::tok {
namespace {

// A SAX handler that builds the DOM as nlohmann's own does, except for the
// members "vocab" and "merges" of the root's "model" object, whose entries go
// straight into BpeTables.
class TokenizerSax : public nlohmann::json_sax<Json> {
 public:
  TokenizerSax(Json* root, BpeTables* tables) : root_(root), tables_(tables) {}
  const std::string& error() const { return error_; }

  bool null() override { return Value(nullptr); }
  bool boolean(bool v) override { return Value(v); }
  bool number_integer(number_integer_t v) override { return Value(v); }
  bool number_float(number_float_t v, const string_t&) override { return Value(v); }
  bool binary(binary_t&) override { return Fail("binary values are not JSON"); }
  bool number_unsigned(number_unsigned_t v) override {
    if (mode_ == Mode::kVocab) {
      tables_->vocab.emplace_back(std::move(vocab_key_), v);
      return true;
    }
    return Value(v);
  }
  bool string(string_t& s) override {
    if (mode_ == Mode::kMerges) {
      if (!tables_->merges.empty()) return Fail(MergeError());
      tables_->merge_lines.push_back(std::move(s));
      return true;
    }
    if (mode_ == Mode::kMergePair) {
      if (pair_size_ == 2) return Fail(MergeError());
      (pair_size_++ == 0 ? pair_.first : pair_.second) = std::move(s);
      return true;
    }
    return Value(std::move(s));
  }
  bool key(string_t& k) override {
    if (mode_ == Mode::kVocab) {
      vocab_key_ = std::move(k);
    } else {
      key_ = std::move(k);
    }
    return true;
  }
  bool start_object(std::size_t) override {
    if (mode_ == Mode::kDom && AtModelMember("vocab")) {
      if (tables_->has_vocab) return Fail("model.vocab: given twice");
      tables_->has_vocab = true;
      mode_ = Mode::kVocab;
      return true;
    }
    if (mode_ != Mode::kDom) return Fail(mode_ == Mode::kVocab ? VocabError() : MergeError());
    return Open(Json::object());
  }
  bool end_object() override {
    if (mode_ == Mode::kVocab) {
      mode_ = Mode::kDom;
      return true;
    }
    stack_.pop_back();
    return true;
  }
  bool start_array(std::size_t) override {
    if (mode_ == Mode::kDom && AtModelMember("merges")) {
      if (tables_->has_merges) return Fail("model.merges: given twice");
      tables_->has_merges = true;
      mode_ = Mode::kMerges;
      return true;
    }
    if (mode_ == Mode::kMerges) {
      if (!tables_->merge_lines.empty()) return Fail(MergeError());
      mode_ = Mode::kMergePair;
      pair_size_ = 0;
      return true;
    }
    if (mode_ != Mode::kDom) return Fail(mode_ == Mode::kVocab ? VocabError() : MergeError());
    return Open(Json::array());
  }
  bool end_array() override {
    if (mode_ == Mode::kMergePair) {
      if (pair_size_ != 2) return Fail(MergeError());
      tables_->merges.push_back(std::move(pair_));
      mode_ = Mode::kMerges;
      return true;
    }
    if (mode_ == Mode::kMerges) {
      mode_ = Mode::kDom;
      return true;
    }
    stack_.pop_back();
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
    return Fail(absl::StrCat("not valid JSON: ", e.what()));
  }

 private:
  enum class Mode { kDom, kVocab, kMerges, kMergePair };

  std::string VocabError() const {
    return absl::StrCat("model.vocab.", vocab_key_, ": expected a token id");
  }
  std::string MergeError() const {
    return absl::StrCat("model.merges[", tables_->merges.size() + tables_->merge_lines.size(),
                        "]: expected [\"A\", \"B\"] or \"A B\" (one form for all)");
  }
  bool Fail(std::string message) {
    if (error_.empty()) error_ = std::move(message);
    return false;
  }
  // Whether the next value is member `name` of the root's "model" object.
  bool AtModelMember(const char* name) const {
    return stack_.size() == 2 && stack_keys_[1] == "model" && stack_[1]->is_object() &&
           key_ == name;
  }
  // Where the next value goes: the root, an array's end, or an object's key.
  Json* Slot() {
    if (stack_.empty()) return root_;
    Json& parent = *stack_.back();
    if (parent.is_array()) {
      parent.push_back(nullptr);
      return &parent.back();
    }
    return &parent[key_];
  }
  template <typename T>
  bool Value(T&& v) {
    if (mode_ != Mode::kDom) return Fail(mode_ == Mode::kVocab ? VocabError() : MergeError());
    *Slot() = Json(std::forward<T>(v));
    return true;
  }
  bool Open(Json container) {
    std::string under = stack_.empty() || stack_.back()->is_array() ? "" : key_;
    Json* slot = Slot();
    *slot = std::move(container);
    stack_.push_back(slot);
    stack_keys_.resize(stack_.size());
    stack_keys_.back() = std::move(under);
    return true;
  }

  Json* root_;
  BpeTables* tables_;
  std::vector<Json*> stack_;            // open containers
  std::vector<std::string> stack_keys_;  // the key each was opened under
  std::string key_, vocab_key_, error_;
  Mode mode_ = Mode::kDom;
  std::pair<std::string, std::string> pair_;
  int pair_size_ = 0;
};

}  // namespace

absl::Status ParseTokenizerJson(std::string_view text, Json* root, BpeTables* tables) {
  TokenizerSax sax(root, tables);
  bool ok = Json::sax_parse(text.begin(), text.end(), &sax);
  if (!ok) return absl::InvalidArgumentError(sax.error().empty() ? "not valid JSON" : sax.error());
  return absl::OkStatus();
}

}  // namespace kiln::tok
