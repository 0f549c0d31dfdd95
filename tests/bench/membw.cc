// kiln-membw: the read bandwidth a few threads reach on this machine, the
// ceiling for decode (whose GEMVs read every weight once per token).
//
//   kiln-membw [--mib N] [--threads T] [--repeat R]
//
// Each of T threads sums its contiguous share of an N MiB buffer (default
// 1024: far beyond the caches) as 64-bit words with 8 independent sums;
// prints the median over R passes (after one warm-up pass) of
// bytes / the slowest thread's time. A benchmark tool, not a test.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

namespace {

uint64_t SumWords(const uint64_t* p, size_t n) {
  uint64_t s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) s[j] += p[i + j];
  for (; i < n; ++i) s[0] += p[i];
  uint64_t t = 0;
  for (uint64_t v : s) t += v;
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  size_t mib = 1024;
  int threads = 2, repeat = 9;
  for (int i = 1; i < argc; ++i) {
    if (i + 1 >= argc) {
      std::fprintf(stderr, "usage: kiln-membw [--mib N] [--threads T] [--repeat R]\n");
      return 2;
    }
    long v = std::atol(argv[i + 1]);
    if (v <= 0) {
      std::fprintf(stderr, "kiln-membw: %s needs a positive value\n", argv[i]);
      return 2;
    }
    if (!std::strcmp(argv[i], "--mib")) mib = v;
    else if (!std::strcmp(argv[i], "--threads")) threads = static_cast<int>(v);
    else if (!std::strcmp(argv[i], "--repeat")) repeat = static_cast<int>(v);
    else {
      std::fprintf(stderr, "kiln-membw: unknown option %s\n", argv[i]);
      return 2;
    }
    ++i;
  }
  size_t words = mib * (1u << 20) / 8;
  std::vector<uint64_t> buf(words);
  for (size_t i = 0; i < words; ++i) buf[i] = i;  // touch every page
  std::vector<double> gbs;
  volatile uint64_t sink = 0;
  for (int r = 0; r <= repeat; ++r) {
    std::vector<uint64_t> sums(threads);
    std::vector<std::thread> pool;
    auto t0 = std::chrono::steady_clock::now();
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        size_t b = words * t / threads, e = words * (t + 1) / threads;
        sums[t] = SumWords(buf.data() + b, e - b);
      });
    for (auto& th : pool) th.join();
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (uint64_t v : sums) sink = sink + v;
    if (r > 0) gbs.push_back(words * 8 / s / 1e9);
  }
  std::sort(gbs.begin(), gbs.end());
  std::printf("%d thread(s), %zu MiB: median %.1f GB/s (min %.1f, max %.1f)\n", threads, mib,
              gbs[gbs.size() / 2], gbs.front(), gbs.back());
  return 0;
}
