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
