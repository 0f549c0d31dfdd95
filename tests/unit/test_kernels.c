/* CPU test kernels with the Kiln CPU entry ABI. */
#include <stdint.h>

/* out[i] = a[i] + w[i] */
void add_f32(void **b, const int64_t *s, int64_t begin, int64_t end) {
  const float *a = (const float *)b[0], *w = (const float *)b[1];
  float *out = (float *)b[2];
  (void)s;
  for (int64_t i = begin; i < end; ++i) out[i] = a[i] + w[i];
}

/* out[i] = a[i] + s[0] * w[i] */
void add_scaled_f32(void **b, const int64_t *s, int64_t begin, int64_t end) {
  const float *a = (const float *)b[0], *w = (const float *)b[1];
  float *out = (float *)b[2];
  for (int64_t i = begin; i < end; ++i) out[i] = a[i] + (float)s[0] * w[i];
}

/* A kernel in two phases (EntryPoint.phases = 2), the second reading what
   other programs of the first wrote: tmp[i] = 2 a[i], then out[i] =
   tmp[s[0] - 1 - i]. Buffers (a, tmp, out); scalars (n). */
void reverse_f32(void **b, const int64_t *s, int64_t begin, int64_t end) {
  const float *a = (const float *)b[0];
  float *tmp = (float *)b[1];
  (void)s;
  for (int64_t i = begin; i < end; ++i)
    tmp[i] = 2.0f * a[i];
}
void reverse_f32_phase1(void **b, const int64_t *s, int64_t begin,
                        int64_t end) __asm__("reverse_f32.phase1");
void reverse_f32_phase1(void **b, const int64_t *s, int64_t begin,
                        int64_t end) {
  const float *tmp = (const float *)b[1];
  float *out = (float *)b[2];
  for (int64_t i = begin; i < end; ++i)
    out[i] = tmp[s[0] - 1 - i];
}

/* out[i] = a[i] */
void copy_f32(void **b, const int64_t *s, int64_t begin, int64_t end) {
  const float *a = (const float *)b[0];
  float *out = (float *)b[1];
  (void)s;
  for (int64_t i = begin; i < end; ++i) out[i] = a[i];
}

/* Reads through a weight table: out[i] = table[i / s[0]][i % s[0]]. */
void gather_table_f32(void **b, const int64_t *s, int64_t begin, int64_t end) {
  const float *const *table = (const float *const *)b[0];
  float *out = (float *)b[1];
  for (int64_t i = begin; i < end; ++i) out[i] = table[i / s[0]][i % s[0]];
}

/* Toy LM: one program per token row r; logits[r, v] = (v == (tokens[r] + 1) % V).
   Buffers (tokens int32, logits f32); scalars (V). */
void toy_logits(void **b, const int64_t *s, int64_t begin, int64_t end) {
  const int32_t *tokens = (const int32_t *)b[0];
  float *logits = (float *)b[1];
  int64_t V = s[0];
  for (int64_t r = begin; r < end; ++r) {
    int64_t next = ((int64_t)tokens[r] + 1) % V;
    for (int64_t v = 0; v < V; ++v) logits[r * V + v] = v == next ? 1.0f : 0.0f;
  }
}

/* state[b] = tokens[b, S - 1]. Buffers (tokens int32 [B, S], state int32 [B]);
   scalars (S); one program per batch row. */
void toy_store_last(void **b, const int64_t *s, int64_t begin, int64_t end) {
  const int32_t *tokens = (const int32_t *)b[0];
  int32_t *state = (int32_t *)b[1];
  for (int64_t r = begin; r < end; ++r) state[r] = tokens[r * s[0] + s[0] - 1];
}
