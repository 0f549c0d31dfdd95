// kiln::Tokenizer on small hand-written tokenizer.json files, with ids derived
// by hand from Hugging Face's rules (tests/e2e/test_tokenizer.py compares
// with the library itself on trained tokenizers).
#include "kiln/tokenizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "tokenizer_regex.h"
#include "tokenizer_unicode.h"

namespace kiln {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Ids = std::vector<int32_t>;

// A tokenizer.json with the given model vocab/merges and components.
std::string Json(const std::string& model_extra, const std::string& vocab,
                 const std::string& merges, const std::string& rest = "",
                 const std::string& added = "[]") {
  return R"({"version": "1.0", "truncation": null, "padding": null, "added_tokens": )" + added +
         (rest.empty() ? "" : ", " + rest) +
         R"(, "model": {"type": "BPE", "dropout": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null)" +
         (model_extra.empty() ? "" : ", " + model_extra) + R"(, "vocab": )" + vocab +
         R"(, "merges": )" + merges + "}}";
}

std::unique_ptr<Tokenizer> Make(const std::string& json) {
  auto t = Tokenizer::FromJson(json, "test.json");
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? std::move(*t) : nullptr;
}

Ids Encode(const Tokenizer& t, const std::string& text, bool special = true) {
  EncodeOptions o;
  o.add_special_tokens = special;
  auto ids = t.Encode(text, o);
  EXPECT_TRUE(ids.ok()) << ids.status();
  return ids.ok() ? *ids : Ids{-1};
}

std::string Decode(const Tokenizer& t, const Ids& ids, bool skip = false) {
  DecodeOptions o;
  o.skip_special_tokens = skip;
  auto text = t.Decode(ids, o);
  EXPECT_TRUE(text.ok()) << text.status();
  return text.ok() ? *text : "<error>";
}

std::string LoadError(const std::string& json) {
  auto t = Tokenizer::FromJson(json, "bad.json");
  EXPECT_FALSE(t.ok());
  return t.ok() ? "" : std::string(t.status().message());
}

// Byte-level BPE (GPT-2 split, ByteLevel decoder): "Ġ" is a space, "Ċ" a newline.
const std::string kByteLevel = Json(
    "", R"({"a": 0, "b": 1, "c": 2, "Ġ": 3, "ab": 4, "bc": 5, "Ġa": 6, "Ġab": 7, "Ċ": 8})",
    R"([["a", "b"], ["Ġ", "ab"], ["b", "c"], ["Ġ", "a"]])",
    R"("pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                         "use_regex": true},
       "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
                   "use_regex": true})");

TEST(TokenizerTest, ByteLevelMergesByRank) {
  auto t = Make(kByteLevel);
  ASSERT_TRUE(t);
  // "ab" | " abc" | "\n": a+b (rank 0), then Ġ+ab (rank 1) before b+c (rank 2)
  // can apply, and Ġab+c is no merge.
  EXPECT_THAT(Encode(*t, "ab abc\n"), ElementsAre(4, 7, 2, 8));
  EXPECT_EQ(Decode(*t, {4, 7, 2, 8}), "ab abc\n");
  EXPECT_THAT(Encode(*t, ""), ElementsAre());
  EXPECT_EQ(t->VocabSize(), 9u);
  EXPECT_EQ(t->TokenToId("Ġab"), 7);
  EXPECT_EQ(t->IdToToken(8), "Ċ");
  EXPECT_EQ(t->TokenToId("zz"), std::nullopt);
  EXPECT_EQ(t->IdToToken(9), std::nullopt);
}

TEST(TokenizerTest, EqualRanksMergeLeftmostFirst) {
  auto t = Make(Json("", R"({"a": 0, "aa": 1})", R"(["a a"])"));
  ASSERT_TRUE(t);
  EXPECT_THAT(Encode(*t, "aaa"), ElementsAre(1, 0));
  EXPECT_THAT(Encode(*t, "aaaaa"), ElementsAre(1, 1, 0));
}

TEST(TokenizerTest, LowerRankWinsOverPosition) {
  // "b c" ranks before "a b": abc -> a + bc, not ab + c.
  auto t = Make(Json("", R"({"a": 0, "b": 1, "c": 2, "ab": 3, "bc": 4})", R"(["b c", "a b"])"));
  ASSERT_TRUE(t);
  EXPECT_THAT(Encode(*t, "abc"), ElementsAre(0, 4));
  EXPECT_THAT(Encode(*t, "abab"), ElementsAre(3, 3));
}

TEST(TokenizerTest, IgnoreMergesTakesWholeWords) {
  // "abc" is in the vocabulary but no merge makes it.
  std::string vocab = R"({"a": 0, "b": 1, "c": 2, "abc": 3})";
  auto plain = Make(Json("", vocab, "[]"));
  auto ignore = Make(Json(R"("ignore_merges": true)", vocab, "[]"));
  ASSERT_TRUE(plain && ignore);
  EXPECT_THAT(Encode(*plain, "abc"), ElementsAre(0, 1, 2));
  EXPECT_THAT(Encode(*ignore, "abc"), ElementsAre(3));
}

// SentencePiece-style (Llama 2 legacy): Prepend + Replace normalizer, byte
// fallback, fuse_unk, <s> template, and the Replace/ByteFallback/Fuse/Strip
// decoder chain.
std::string SentencePiece(bool fuse_unk) {
  const std::string tok = R"("single_word": false, "lstrip": false, "rstrip": false,
                             "normalized": false, "special": true)";
  return Json(
      std::string(R"("unk_token": "<unk>", "byte_fallback": true, "fuse_unk": )") +
          (fuse_unk ? "true" : "false"),
      R"({"<unk>": 0, "<s>": 1, "</s>": 2, "<0xC3>": 3, "<0xA9>": 4, "<0x21>": 5, "▁": 6,
          "h": 7, "i": 8, "▁h": 9, "▁hi": 10})",
      R"(["▁ h", "▁h i"])",
      R"("normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
         "pre_tokenizer": null,
         "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
         "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]})",
      "[{\"id\": 0, \"content\": \"<unk>\", " + tok + "}, {\"id\": 1, \"content\": \"<s>\", " +
          tok + "}, {\"id\": 2, \"content\": \"</s>\", " + tok + "}]");
}

TEST(TokenizerTest, SentencePieceByteFallbackAndTemplate) {
  auto t = Make(SentencePiece(true));
  ASSERT_TRUE(t);
  // "▁hi▁hé!": é is not in the vocabulary -> <0xC3> <0xA9>; ! -> <0x21>.
  EXPECT_THAT(Encode(*t, "hi hé!"), ElementsAre(1, 10, 9, 3, 4, 5));
  EXPECT_THAT(Encode(*t, "hi hé!", false), ElementsAre(10, 9, 3, 4, 5));
  EXPECT_EQ(Decode(*t, {1, 10, 9, 3, 4, 5}), "<s> hi hé!");
  EXPECT_EQ(Decode(*t, {1, 10, 9, 3, 4, 5}, true), "hi hé!");
  // A lone continuation byte is not UTF-8: one U+FFFD per byte.
  EXPECT_EQ(Decode(*t, {10, 4, 4}), "hi\xEF\xBF\xBD\xEF\xBF\xBD");
  // The empty text gets the BOS only (Prepend leaves empty text empty).
  EXPECT_THAT(Encode(*t, ""), ElementsAre(1));
  // Added tokens are cut out before normalization: each side is a new text.
  EXPECT_THAT(Encode(*t, "hi</s>hi"), ElementsAre(1, 10, 2, 10));
  EXPECT_TRUE(t->IsSpecial(2));
  EXPECT_FALSE(t->IsSpecial(10));
  EXPECT_EQ(t->VocabSize(), 11u);  // the added tokens are in the vocabulary
}

TEST(TokenizerTest, UnknownCharactersFuseIntoOneUnk) {
  auto fused = Make(SentencePiece(true));
  auto apart = Make(SentencePiece(false));
  ASSERT_TRUE(fused && apart);
  // U+2603 has neither a token nor byte tokens.
  EXPECT_THAT(Encode(*fused, "\xE2\x98\x83\xE2\x98\x83h", false), ElementsAre(6, 0, 7));
  EXPECT_THAT(Encode(*apart, "\xE2\x98\x83\xE2\x98\x83h", false), ElementsAre(6, 0, 0, 7));
}

TEST(TokenizerTest, StreamDecoderHoldsBackSplitCharacters) {
  auto t = Make(SentencePiece(true));
  ASSERT_TRUE(t);
  StreamDecoder stream(*t);
  std::vector<std::string> chunks;
  for (int32_t id : {10, 9, 3, 4, 5}) {
    auto chunk = stream.Step(id);
    ASSERT_TRUE(chunk.ok()) << chunk.status();
    chunks.push_back(*chunk);
  }
  // "hi", " h", then <0xC3> alone is no text yet, <0xA9> completes "é".
  EXPECT_THAT(chunks, ElementsAre("hi", " h", "", "\xC3\xA9", "!"));
  EXPECT_FALSE(stream.Step(99).ok());
  stream.Reset();
  auto first = stream.Step(9);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(*first, "h");  // Strip drops the leading space of a new stream
}

TEST(TokenizerTest, AddedTokenFlags) {
  auto flags = [](const char* content, int id, const char* which) {
    return std::string("{\"id\": ") + std::to_string(id) + ", \"content\": \"" + content +
           "\", \"single_word\": " + (std::string(which) == "single_word" ? "true" : "false") +
           ", \"lstrip\": " + (std::string(which) == "lstrip" ? "true" : "false") +
           ", \"rstrip\": " + (std::string(which) == "rstrip" ? "true" : "false") +
           ", \"normalized\": false, \"special\": true}";
  };
  std::string added = "[" + flags("<m>", 4, "lstrip") + ", " + flags("[r]", 5, "rstrip") +
                      ", " + flags("xx", 6, "single_word") + "]";
  auto t = Make(Json("", R"({"a": 0, "b": 1, " ": 2, "x": 3})", "[]", "", added));
  ASSERT_TRUE(t);
  EXPECT_THAT(Encode(*t, "a  <m>b"), ElementsAre(0, 4, 1));     // <m> takes the spaces before
  EXPECT_THAT(Encode(*t, "a[r]  b"), ElementsAre(0, 5, 1));     // [r] takes the spaces after
  EXPECT_THAT(Encode(*t, "a xx b"), ElementsAre(0, 2, 6, 2, 1));  // a word of its own
  EXPECT_THAT(Encode(*t, "axx b"), ElementsAre(0, 3, 3, 2, 1));  // inside a word: text
  EXPECT_THAT(Encode(*t, "xx"), ElementsAre(6));
  EXPECT_EQ(t->TokenToId("[r]"), 5);
  EXPECT_EQ(t->IdToToken(6), "xx");
  EXPECT_EQ(t->VocabSize(), 7u);
}

TEST(TokenizerTest, AddedTokenIdsFollowTheVocabulary) {
  // As Hugging Face assigns them: a content in the vocabulary keeps its id,
  // the others follow the vocabulary in order, whatever "id" says.
  std::string added = R"([{"id": 0, "content": "b", "special": true},
                          {"id": 9, "content": "<x>", "special": true},
                          {"id": 7, "content": "<y>", "special": false}])";
  auto t = Make(Json("", R"({"a": 0, "b": 1})", "[]", "", added));
  ASSERT_TRUE(t);
  EXPECT_EQ(t->TokenToId("b"), 1);
  EXPECT_EQ(t->TokenToId("<x>"), 2);
  EXPECT_EQ(t->TokenToId("<y>"), 3);
  EXPECT_THAT(Encode(*t, "a<y>b<x>"), ElementsAre(0, 3, 1, 2));
  EXPECT_EQ(Decode(*t, {0, 3, 1, 2}, true), "a <y>");  // no decoder: joined by spaces
  EXPECT_EQ(t->VocabSize(), 4u);
}

TEST(TokenizerTest, MetaspacePrependsOnlyAtTheStartOfTheInput) {
  std::string added = R"([{"id": 3, "content": "<s>", "normalized": false, "special": true}])";
  std::string metaspace = R"("replacement": "▁", "prepend_scheme": "first", "split": false)";
  auto t = Make(Json("", R"({"▁": 0, "a": 1, "▁a": 2})", R"(["▁ a"])",
                     R"("pre_tokenizer": {"type": "Metaspace", )" + metaspace +
                         R"(}, "decoder": {"type": "Metaspace", )" + metaspace + "}",
                     added));
  ASSERT_TRUE(t);
  EXPECT_THAT(Encode(*t, "a a"), ElementsAre(2, 2));
  EXPECT_THAT(Encode(*t, "<s>a"), ElementsAre(3, 1));  // not at offset 0: no "▁"
  EXPECT_EQ(Decode(*t, {2, 2}), "a a");  // the first token loses its "▁"
}

TEST(TokenizerTest, SplitPatternsUseOnigurumaSemantics) {
  // Oniguruma's `$` ends a line; its \s has no U+180E (PCRE2's has). The
  // merges across piece boundaries show where the pieces are.
  std::string vocab =
      R"({"a": 0, " ": 1, "\n": 2, "b": 3, "  ": 4, "᠎": 5, "a ": 6, "a᠎": 7})";
  auto split = [&](const std::string& pattern) {
    return Make(Json("", vocab, R"([["a", " "], [" ", " "], ["a", "᠎"]])",
                     R"("pre_tokenizer": {"type": "Split", "pattern": {"Regex": ")" + pattern +
                         R"("}, "behavior": "Isolated", "invert": false})"));
  };
  auto eol = split("\\\\s+$");
  ASSERT_TRUE(eol);
  // "a" | "  " (before the line end) | "\nb"; as one piece, "a " would merge.
  EXPECT_THAT(Encode(*eol, "a  \nb"), ElementsAre(0, 4, 2, 3));
  auto space = split("\\\\s");
  ASSERT_TRUE(space);
  // U+180E is no space: "a᠎a" stays one piece, where "a᠎" merges.
  EXPECT_THAT(Encode(*space, "a\xE1\xA0\x8E" "a"), ElementsAre(7, 0));
  EXPECT_THAT(Encode(*space, "a  a"), ElementsAre(0, 1, 1, 0));  // each space apart
}

TEST(TokenizerTest, OnigurumaPatternTranslation) {
  auto t = tok::OnigurumaToPcre2(R"(\s+(?!\S)|[^\s\p{L}]\h)");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT(*t, HasSubstr(R"([\t-\r\x{85}\p{Z}]+(?![^\t-\r\x{85}\p{Z}]))"));
  EXPECT_THAT(*t, HasSubstr(R"([0-9A-Fa-f])"));
  // \p{L} gains the letters of Unicode 15/16 (CJK Extension H starts at U+31350).
  EXPECT_THAT(*t, HasSubstr(R"(\x{31350}-\x{323AF})"));
  EXPECT_THAT(*tok::OnigurumaToPcre2(R"(\\s)"), "\\\\s");  // an escaped backslash
  EXPECT_FALSE(tok::OnigurumaToPcre2(R"([\W])").ok());
}

TEST(TokenizerTest, Utf8Helpers) {
  EXPECT_TRUE(tok::IsValidUtf8("a\xC3\xA9\xF0\x9F\x98\x80"));
  size_t bad = 0;
  EXPECT_FALSE(tok::IsValidUtf8("ab\xC0\x80", &bad));  // overlong
  EXPECT_EQ(bad, 2u);
  EXPECT_FALSE(tok::IsValidUtf8("\xED\xA0\x80"));  // a surrogate
  // One U+FFFD per maximal invalid subpart, as Rust's from_utf8_lossy.
  EXPECT_EQ(tok::Utf8Lossy("\xF0\x9F\x98"), "\xEF\xBF\xBD");
  EXPECT_EQ(tok::Utf8Lossy("\xE0\x80" "a"), "\xEF\xBF\xBD\xEF\xBF\xBD" "a");
  EXPECT_EQ(tok::Utf8Lossy("a\xC3"), "a\xEF\xBF\xBD");
  EXPECT_EQ(tok::ByteToChar(' '), 0x120u);  // Ġ
  EXPECT_EQ(tok::CharToByte(0x10A), '\n');  // Ċ
  EXPECT_EQ(tok::CharToByte('A'), 'A');
  // NFC composes; a mark that Hugging Face's tables do not know stays put.
  EXPECT_EQ(*tok::NormalizeUnicode("e\xCC\x81", tok::NormalForm::kNfc), "\xC3\xA9");
  EXPECT_EQ(*tok::NormalizeUnicode("x\xCC\x81\xDF\xBD", tok::NormalForm::kNfc),
            "x\xCC\x81\xDF\xBD");  // U+07FD (class 220) after U+0301 (230)
  EXPECT_EQ(*tok::NormalizeUnicode("x\xCC\x81\xCC\xA3", tok::NormalForm::kNfd),
            "x\xCC\xA3\xCC\x81");  // U+0323 (220) moves before U+0301
}

TEST(TokenizerTest, ErrorsNameTheJsonPath) {
  const std::string vocab = R"({"a": 0})";
  EXPECT_THAT(LoadError("{\"model\": "), HasSubstr("bad.json: not valid JSON"));
  EXPECT_THAT(LoadError(R"({"model": {"type": "WordPiece", "vocab": {"a": 0}}})"),
              HasSubstr("model.type: unsupported model type 'WordPiece'"));
  EXPECT_THAT(LoadError(Json("", vocab, "[]",
                             R"("pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                                  {"type": "ByteLevel", "add_prefix_space": false},
                                  {"type": "Whitespace"}]})")),
              HasSubstr("pre_tokenizer.pretokenizers[1].type: unsupported pre-tokenizer type "
                        "'Whitespace'"));
  EXPECT_THAT(LoadError(Json("", vocab, "[]", R"("normalizer": {"type": "Lowercase"})")),
              HasSubstr("normalizer.type: unsupported normalizer type 'Lowercase'"));
  EXPECT_THAT(LoadError(Json("", vocab, "[]", R"("decoder": {"type": "WordPiece"})")),
              HasSubstr("decoder.type: unsupported decoder type 'WordPiece'"));
  EXPECT_THAT(LoadError(Json("", vocab, "[]", R"("post_processor": {"type": "BertProcessing"})")),
              HasSubstr("post_processor.type: unsupported post-processor type"));
  EXPECT_THAT(LoadError(Json("", vocab, R"([["a", "b"]])")),
              HasSubstr("model.merges[0]: token 'b' of merge"));
  EXPECT_THAT(LoadError(Json(R"("dropout": 0.1)", vocab, "[]")), HasSubstr("model.dropout"));
  EXPECT_THAT(LoadError(Json(R"("continuing_subword_prefix": "##")", vocab, "[]")),
              HasSubstr("model.continuing_subword_prefix"));
  EXPECT_THAT(LoadError(Json("", R"({"a": 0, "b": "x"})", "[]")),
              HasSubstr("model.vocab.b: expected a token id"));
  EXPECT_THAT(
      LoadError(R"({"truncation": {"max_length": 8}, "model": {"type": "BPE", "vocab": {},
                    "merges": []}})"),
      HasSubstr("truncation: "));
  EXPECT_THAT(LoadError(Json("", vocab, "[]",
                             R"("pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(a"},
                                 "behavior": "Isolated", "invert": false})")),
              HasSubstr("pre_tokenizer.pattern: '(a': cannot compile"));
  EXPECT_THAT(LoadError(Json("", vocab, "[]",
                             R"("post_processor": {"type": "TemplateProcessing",
                                 "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}],
                                 "special_tokens": {}})")),
              HasSubstr("post_processor.single[0]: special token '<s>' is missing"));
  auto missing = Tokenizer::Load("/nonexistent/tokenizer.json");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
}

TEST(TokenizerTest, EncodeAndDecodeErrors) {
  auto t = Make(kByteLevel);
  ASSERT_TRUE(t);
  auto bad = t->Encode("ab\xFF");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("not valid UTF-8 (byte 2)"));
  auto unknown = t->Decode({0, 42});
  EXPECT_THAT(unknown.status().message(), HasSubstr("token id 42 is not in the vocabulary"));
}

TEST(TokenizerTest, ConcurrentEncodesAgree) {
  auto t = Make(kByteLevel);
  ASSERT_TRUE(t);
  std::string text;
  for (int i = 0; i < 200; ++i) text += i % 3 ? "ab abc " : "c\nabab ";
  Ids expected = Encode(*t, text);
  std::vector<Ids> results(4);
  std::vector<std::thread> threads;
  for (int k = 0; k < 4; ++k) {
    threads.emplace_back([&, k] {
      for (int r = 0; r < 20; ++r) results[k] = *t->Encode(text);
    });
  }
  for (auto& th : threads) th.join();
  for (const Ids& r : results) EXPECT_EQ(r, expected);
}

// kiln-tokenize, as the end-to-end test uses it.
TEST(KilnTokenizeTest, EncodeDecodeStreamVocab) {
  std::string dir = ::testing::TempDir();
  std::string path = dir + "/kiln_tokenize_test.json";
  {
    FILE* f = std::fopen(path.c_str(), "w");
    ASSERT_TRUE(f);
    std::string json = SentencePiece(true);
    std::fwrite(json.data(), 1, json.size(), f);
    std::fclose(f);
  }
  std::string input_path = dir + "/kiln_tokenize_input.txt";
  auto run = [&](const std::string& args, int* code, const std::string& input = "") {
    FILE* in = std::fopen(input_path.c_str(), "w");
    std::fwrite(input.data(), 1, input.size(), in);
    std::fclose(in);
    std::string out;
    std::string cmd =
        std::string(KILN_TOKENIZE_EXE) + " " + path + " " + args + " < " + input_path + " 2>&1";
    FILE* p = popen(cmd.c_str(), "r");
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
    int status = pclose(p);
    *code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return out;
  };
  int code = 0;
  EXPECT_EQ(run("--encode", &code, "hi hé!\n"), "1 10 9 3 4 5 0\n");  // "\n" is <unk>
  EXPECT_EQ(code, 0);
  EXPECT_EQ(run("--encode --no-special", &code), "\n");
  EXPECT_EQ(run("--decode", &code, "10\n 9"), "hi h");  // ids from standard input
  EXPECT_EQ(run("--decode 1 10 9 3 4 5", &code), "<s> hi hé!");
  EXPECT_EQ(run("--decode --skip-special 1 10", &code), "hi");
  EXPECT_EQ(run("--decode --stream 10 3 4", &code), "6869\n\nc3a9\n");  // "hi", -, "é"
  std::string vocab = run("--vocab", &code);
  EXPECT_EQ(vocab.substr(0, vocab.find('\n')), "11");
  EXPECT_THAT(vocab, HasSubstr("\n10\te296816869\n"));  // "▁hi"
  EXPECT_THAT(run("--decode 77", &code), HasSubstr("token id 77 is not in the vocabulary"));
  EXPECT_EQ(code, 1);
  run("--frobnicate", &code);
  EXPECT_EQ(code, 2);
}

}  // namespace
}  // namespace kiln
