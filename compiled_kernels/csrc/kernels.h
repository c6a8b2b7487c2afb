// The library's entry points, one per kernel; each source includes this, so the compiler checks
// its definition against the declaration that replay.c calls. Layouts: see each source, and
// native.SIGNATURES for the arguments as Python passes them.
#pragma once

#include <stdint.h>

int linear(const void *x, int64_t x_stride, const void *w, const void *bias, void *out,
           int64_t rows, int64_t in, int64_t out_features, int kind, int is_bf16,
           int num_threads);
int int8_linear(const void *x, int64_t x_stride, const int8_t *w, const float *scales,
                const void *bias, void *out, int64_t rows, int64_t in, int64_t out_features,
                int is_bf16, int num_threads);
int int4_linear(const void *x, int64_t x_stride, const uint8_t *w, const float *scales,
                const float *mins, const void *bias, void *out, int64_t rows, int64_t in,
                int64_t out_features, int is_bf16, int num_threads);
void rms_norm(const void *x, int64_t x_stride, const void *residual, void *residual_out,
              const void *weight, void *out, int64_t rows, int64_t hidden, float eps, int is_bf16,
              int num_threads);
void apply_rotary(const void *x, int64_t x_stride, const void *cos, const void *sin, void *out,
                  int64_t tokens, int64_t heads, int64_t head_dim, int is_bf16, int num_threads);
void silu_and_mul(const void *gate_up, void *out, int64_t rows, int64_t width, int is_bf16,
                  int num_threads);
void write_kv(const void *k, int64_t k_stride, const void *v, int64_t v_stride, void *k_cache,
              void *v_cache, const int64_t *slot_mapping, int64_t tokens, int64_t kv_heads,
              int64_t head_dim, int64_t num_slots, int is_bf16, int cache_bf16);
int paged_decode_attention(const void *q, const void *k_cache, const void *v_cache,
                           const int64_t *block_tables, const int64_t *context_lens, void *out,
                           int64_t num_seqs, int64_t num_heads, int64_t num_kv_heads,
                           int64_t head_dim, int64_t block_size, int64_t num_blocks,
                           int64_t max_blocks, int64_t q_row_stride, float scale, int64_t window,
                           float softcap, int is_bf16, int cache_bf16, int num_threads);
int paged_prefill_attention(const void *q, const void *k_cache, const void *v_cache,
                            const int64_t *block_table, void *out, int64_t num_new,
                            int64_t context_len, int64_t num_heads, int64_t num_kv_heads,
                            int64_t head_dim, int64_t block_size, int64_t num_blocks,
                            int64_t q_row_stride, float scale, int64_t window, float softcap,
                            int is_bf16, int cache_bf16, int num_threads);
void argmax_rows(const float *logits, int64_t *out, int64_t rows, int64_t vocab,
                 int num_threads);
