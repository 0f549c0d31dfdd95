// kiln-tokenize: encodes and decodes with a tokenizer.json (kiln::Tokenizer).
//
//   kiln-tokenize TOKENIZER_JSON --encode [--no-special] < TEXT
//   kiln-tokenize TOKENIZER_JSON --decode [--skip-special] [--stream] [ID...]
//   kiln-tokenize TOKENIZER_JSON --vocab
#include <cstdio>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "kiln/tokenizer.h"

namespace {

constexpr char kUsage[] =
    "usage: kiln-tokenize TOKENIZER_JSON --encode [--no-special] < TEXT\n"
    "       kiln-tokenize TOKENIZER_JSON --decode [--skip-special] [--stream] [ID...]\n"
    "       kiln-tokenize TOKENIZER_JSON --vocab\n"
    "  --encode        prints the ids of standard input, space-separated, on one line\n"
    "  --no-special    leaves out the post-processor's special tokens (BOS)\n"
    "  --decode        prints the text of the ids (from standard input when none are\n"
    "                  given), exactly, without a newline\n"
    "  --skip-special  drops special tokens from the text\n"
    "  --stream        decodes id by id (kiln::StreamDecoder) and prints each step's text\n"
    "                  as one line of hex bytes (an empty line: nothing complete yet)\n"
    "  --vocab         prints the vocabulary size, then ID<TAB>HEX-OF-TOKEN per token\n";

std::string Hex(const std::string& s) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

int Fail(const std::string& message) {
  std::fprintf(stderr, "kiln-tokenize: %s\n", message.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "--help" || std::string(argv[i]) == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
  if (argc < 3) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  std::string mode;
  kiln::EncodeOptions encode;
  kiln::DecodeOptions decode;
  bool stream = false;
  std::vector<std::string> args;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--encode" || a == "--decode" || a == "--vocab") {
      if (!mode.empty()) return Fail("give one of --encode, --decode, --vocab");
      mode = a;
    } else if (a == "--no-special") {
      encode.add_special_tokens = false;
    } else if (a == "--skip-special") {
      decode.skip_special_tokens = true;
    } else if (a == "--stream") {
      stream = true;
    } else if (a.rfind("--", 0) == 0) {
      std::fputs(kUsage, stderr);
      return 2;
    } else {
      args.push_back(a);
    }
  }
  if (mode.empty() || (mode != "--decode" && !args.empty())) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  auto tokenizer = kiln::Tokenizer::Load(argv[1]);
  if (!tokenizer.ok()) return Fail(std::string(tokenizer.status().message()));
  const kiln::Tokenizer& tok = **tokenizer;

  if (mode == "--vocab") {
    std::printf("%zu\n", tok.VocabSize());
    // Ids are dense in practice; the bound covers the model's largest (2^24)
    // and the added tokens after it.
    size_t found = 0;
    for (int32_t id = 0; found < tok.VocabSize() && id < (1 << 25); ++id) {
      if (auto t = tok.IdToToken(id)) {
        std::printf("%d\t%s\n", id, Hex(*t).c_str());
        ++found;
      }
    }
    return 0;
  }
  if (mode == "--encode") {
    std::string text(std::istreambuf_iterator<char>(std::cin), {});
    auto ids = tok.Encode(text, encode);
    if (!ids.ok()) return Fail(std::string(ids.status().message()));
    std::string line;
    for (size_t i = 0; i < ids->size(); ++i) line += (i ? " " : "") + std::to_string((*ids)[i]);
    std::printf("%s\n", line.c_str());
    return 0;
  }
  if (args.empty()) {
    std::string word;
    while (std::cin >> word) args.push_back(word);
  }
  std::vector<int32_t> ids;
  for (const std::string& a : args) {
    int32_t id;
    if (!absl::SimpleAtoi(a, &id)) return Fail("not a token id: '" + a + "'");
    ids.push_back(id);
  }
  if (stream) {
    kiln::StreamDecoder decoder(tok, decode);
    for (int32_t id : ids) {
      auto chunk = decoder.Step(id);
      if (!chunk.ok()) return Fail(std::string(chunk.status().message()));
      std::printf("%s\n", Hex(*chunk).c_str());
    }
    return 0;
  }
  auto text = tok.Decode(ids, decode);
  if (!text.ok()) return Fail(std::string(text.status().message()));
  std::fwrite(text->data(), 1, text->size(), stdout);
  return 0;
}
