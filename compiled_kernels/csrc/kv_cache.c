// Writes this step's keys and values into the paged KV cache, each token at its slot.
// Mirrors write_kv_reference in compiled_kernels/attention.py: a plain copy when the cache
// holds the model's element type (exact); into a bfloat16 cache of a float32 model, each
// element rounded to nearest even as torch's conversion does (so the twin matches bitwise).
//
// k, v:          [tokens, kv_heads, head_dim], rows k_stride / v_stride elements apart
// k/v cache:     [kv_heads, num_slots, head_dim] (num_slots = blocks * block_size)
// slot_mapping:  [tokens] int64
// is_bf16:       k and v are bfloat16 (else float32); cache_bf16: the cache is

#include <stdint.h>
#include <string.h>

#include "bf16.h"
#include "kernels.h"

// n elements from src (element type of is_bf16) to dst (that of cache_bf16).
static inline void copy_row(void *dst, const void *src, int64_t n, int is_bf16, int cache_bf16) {
    if (is_bf16 == cache_bf16) {
        memcpy(dst, src, (size_t)n * (is_bf16 ? 2 : 4));
        return;
    }
    for (int64_t d = 0; d < n; d++) store_elem(dst, d, load_elem(src, d, is_bf16), cache_bf16);
}

void write_kv(const void *k, int64_t k_stride, const void *v, int64_t v_stride, void *k_cache,
              void *v_cache, const int64_t *slot_mapping, int64_t tokens, int64_t kv_heads,
              int64_t head_dim, int64_t num_slots, int is_bf16, int cache_bf16) {
    const int64_t in_size = is_bf16 ? 2 : 4, cache_size = cache_bf16 ? 2 : 4;
    for (int64_t t = 0; t < tokens; t++) {
        const int64_t slot = slot_mapping[t];
        for (int64_t h = 0; h < kv_heads; h++) {
            const int64_t dst = ((h * num_slots) + slot) * head_dim * cache_size;
            const int64_t k_src = (t * k_stride + h * head_dim) * in_size;
            const int64_t v_src = (t * v_stride + h * head_dim) * in_size;
            copy_row((char *)k_cache + dst, (const char *)k + k_src, head_dim, is_bf16, cache_bf16);
            copy_row((char *)v_cache + dst, (const char *)v + v_src, head_dim, is_bf16, cache_bf16);
        }
    }
}
