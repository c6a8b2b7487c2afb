// Writes this step's keys and values into the paged KV cache, each token at its slot.
// Mirrors write_kv_reference in compiled_kernels/attention.py (a plain copy, so exact).
//
// k, v:          [tokens, kv_heads, head_dim], rows k_stride / v_stride elements apart
// k/v cache:     [kv_heads, num_slots, head_dim] (num_slots = blocks * block_size)
// slot_mapping:  [tokens] int64
// elem_size:     bytes per element

#include <stdint.h>
#include <string.h>

#include "kernels.h"

void write_kv(const void *k, int64_t k_stride, const void *v, int64_t v_stride, void *k_cache,
              void *v_cache, const int64_t *slot_mapping, int64_t tokens, int64_t kv_heads,
              int64_t head_dim, int64_t num_slots, int64_t elem_size) {
    const size_t row_bytes = (size_t)(head_dim * elem_size);
    for (int64_t t = 0; t < tokens; t++) {
        const int64_t slot = slot_mapping[t];
        for (int64_t h = 0; h < kv_heads; h++) {
            const int64_t dst = ((h * num_slots) + slot) * head_dim * elem_size;
            memcpy((char *)k_cache + dst, (const char *)k + (t * k_stride + h * head_dim) * elem_size,
                   row_bytes);
            memcpy((char *)v_cache + dst, (const char *)v + (t * v_stride + h * head_dim) * elem_size,
                   row_bytes);
        }
    }
}
