// kiln-llama-logits: the logits llama.cpp computes for a prompt of token ids,
// for tests/bench/vs_reference_runtimes.py's agreement check. Built by that
// script against the libllama it builds from llama-cpp-python's vendored
// sources (not part of Kiln's CMake build: Kiln does not depend on llama.cpp).
//
//   kiln-llama-logits MODEL.gguf TOKENS OUT.npy [THREADS [REPACK]]
//
// TOKENS is a comma-separated list of ids, fed as one batch at positions
// 0..n-1 of sequence 0 (no tokenizer, no BOS added). OUT.npy gets float32
// [n, n_vocab]: the logits of every position. REPACK 0 turns off the CPU's
// extra weight buffers (AMX, repacked layouts), as llama-bench's --repack 0.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "llama.h"

namespace {

int Fail(const std::string& what) {
  std::fprintf(stderr, "kiln-llama-logits: %s\n", what.c_str());
  return 1;
}

bool ParseTokens(const char* text, std::vector<llama_token>* out) {
  const char* p = text;
  while (*p) {
    char* end = nullptr;
    long v = std::strtol(p, &end, 10);
    if (end == p || v < 0 || v > 0x7fffffff) return false;
    out->push_back(static_cast<llama_token>(v));
    p = end;
    if (*p == ',') ++p;
    else if (*p) return false;
  }
  return !out->empty();
}

// float32 .npy, C order; written to OUT.tmp, then renamed.
bool WriteNpy(const std::string& path, const std::vector<float>& data, long rows, long cols) {
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(rows) +
                       ", " + std::to_string(cols) + "), }";
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) return false;
  unsigned char magic[8] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
  uint16_t len = static_cast<uint16_t>(header.size());
  bool ok = std::fwrite(magic, 1, 8, f) == 8 && std::fwrite(&len, 2, 1, f) == 1 &&
            std::fwrite(header.data(), 1, header.size(), f) == header.size() &&
            std::fwrite(data.data(), sizeof(float), data.size(), f) == data.size();
  ok = (std::fclose(f) == 0) && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4 || argc > 6) {
    std::fprintf(stderr, "usage: kiln-llama-logits MODEL.gguf TOKENS(id,id,...) OUT.npy [THREADS [REPACK(0|1)]]\n");
    return 2;
  }
  std::vector<llama_token> tokens;
  if (!ParseTokens(argv[2], &tokens)) return Fail(std::string("bad token list '") + argv[2] + "'");
  int threads = argc >= 5 ? std::atoi(argv[4]) : 2;
  if (threads < 1) return Fail(std::string("bad thread count '") + argv[4] + "'");
  bool repack = true;
  if (argc == 6) {
    if (std::strcmp(argv[5], "0") != 0 && std::strcmp(argv[5], "1") != 0)
      return Fail(std::string("REPACK must be 0 or 1, got '") + argv[5] + "'");
    repack = argv[5][0] == '1';
  }

  llama_backend_init();
  llama_model_params mp = llama_model_default_params();
  mp.n_gpu_layers = 0;
  mp.use_extra_bufts = repack;
  llama_model* model = llama_model_load_from_file(argv[1], mp);
  if (!model) return Fail(std::string("cannot load ") + argv[1]);
  const llama_vocab* vocab = llama_model_get_vocab(model);
  const int n_vocab = llama_vocab_n_tokens(vocab);
  for (size_t i = 0; i < tokens.size(); ++i)
    if (tokens[i] >= n_vocab)
      return Fail("token " + std::to_string(tokens[i]) + " at " + std::to_string(i) +
                  " is outside the vocabulary of " + std::to_string(n_vocab));

  const int n = static_cast<int>(tokens.size());
  llama_context_params cp = llama_context_default_params();
  cp.n_ctx = static_cast<uint32_t>(n < 64 ? 64 : n);
  cp.n_batch = cp.n_ctx;
  cp.n_ubatch = cp.n_ctx;
  cp.n_threads = threads;
  cp.n_threads_batch = threads;
  cp.no_perf = true;
  llama_context* ctx = llama_init_from_model(model, cp);
  if (!ctx) return Fail("cannot create a context");

  llama_batch batch = llama_batch_init(n, 0, 1);
  for (int i = 0; i < n; ++i) {
    batch.token[i] = tokens[static_cast<size_t>(i)];
    batch.pos[i] = i;
    batch.n_seq_id[i] = 1;
    batch.seq_id[i][0] = 0;
    batch.logits[i] = 1;
  }
  batch.n_tokens = n;
  if (int rc = llama_decode(ctx, batch); rc != 0) return Fail("llama_decode returned " + std::to_string(rc));

  std::vector<float> out(static_cast<size_t>(n) * static_cast<size_t>(n_vocab));
  for (int i = 0; i < n; ++i) {
    const float* l = llama_get_logits_ith(ctx, i);
    if (!l) return Fail("no logits for position " + std::to_string(i));
    std::memcpy(out.data() + static_cast<size_t>(i) * n_vocab, l, sizeof(float) * n_vocab);
  }
  if (!WriteNpy(argv[3], out, n, n_vocab)) return Fail(std::string("cannot write ") + argv[3]);
  llama_batch_free(batch);
  llama_free(ctx);
  llama_model_free(model);
  llama_backend_free();
  return 0;
}
