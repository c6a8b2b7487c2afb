// What the quantized kernels (int4_linear.c, int8_linear.c) share about their output: columns
// come in blocks of 8, one 8-lane vector of sums per row and block.
#pragma once

#include <stdint.h>
#include <string.h>

#ifdef __AVX512F__
#include <immintrin.h>
#endif

#include "bf16.h"
#include "vec.h"

enum { COLS = 8 };

// Rows [r0, r0 + mr) of columns [8b, 8b + n) (n is 8 or 16, one or two blocks) from acc, n / 8
// vectors a row, plus the bias; columns from out_features on are padding and not stored.
static inline void store_rows(const vf *acc, int64_t r0, int mr, int64_t b, int n,
                              const void *bias, void *out, int64_t out_features, int is_bf16) {
    for (int i = 0; i < mr; i++)
        for (int c = 0; c < n && b * COLS + c < out_features; c++) {
            const int64_t col = b * COLS + c;
            float y = acc[i * (n / COLS) + c / COLS][c % COLS];
            if (bias != NULL) y += load_elem(bias, col, is_bf16);
            store_elem(out, (r0 + i) * out_features + col, y, is_bf16);
        }
}

#ifdef __AVX512F__
// Group g's 8 values of block b, then of block b + 1 (values: [blocks, groups, 8] float32).
static inline __m512 two_blocks(const float *values, int64_t groups, int64_t b, int64_t g) {
    const __m256 first = _mm256_loadu_ps(values + (b * groups + g) * COLS);
    const __m256 second = _mm256_loadu_ps(values + ((b + 1) * groups + g) * COLS);
    return _mm512_insertf32x8(_mm512_castps256_ps512(first), second, 1);
}
#endif
