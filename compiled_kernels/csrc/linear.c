// Linear layers, y = x W^T (+ bias), where every output is computed in one fixed order that
// depends on nothing but its own row of x and column of W: not the number of rows, not the
// row's position, not the thread count. So a sequence's logits are bitwise the same alone or
// in any batch, prefill chunk or decode step, by construction.
//
// The order: output (r, n) keeps 8 float32 partial sums, lane l taking inputs k = l, l + 8,
// l + 16, ... in increasing k with one multiply-add each; the 8 lanes are then added in a
// fixed tree. Inputs past in_features count as zero. Blocks of up to 4 rows x 3 columns share
// their loads, but each output keeps its own accumulators, so blocking changes only speed.
// The multiply-add is fused where the build has FMA (x86-64-v3 and up) and nothing else is
// contracted (-std=c11 turns contraction off), so every v3 or v4 CPU gives the same bits.
//
// x:    [rows, in], rows x_stride elements apart; bfloat16 when is_bf16, else float32
// out:  [rows, out], contiguous, x's element type
// bias: [out] in x's element type, or NULL
// Weights by `kind`:
//   WEIGHT_F32:  w [out, in] float32
//   WEIGHT_BF16: w [out, in] bfloat16
// (int8 and int4 weights have their own kernels, int8_linear.c and int4_linear.c, with integer
// dot products.)

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__AVX2__) || defined(__FMA__)
#include <immintrin.h>
#endif

#include "bf16.h"
#include "kernels.h"
#include "vec.h"

enum { WEIGHT_F32 = 0, WEIGHT_BF16 = 1 };
enum { LANES = 8, MR = 4, NR = 3, ROW_CHUNK = 64 };

typedef int32_t vi __attribute__((vector_size(32)));
typedef uint16_t vu16 __attribute__((vector_size(16)));

// 8 consecutive bfloat16 bits widened to int32 lanes. GCC compiles __builtin_convertvector from
// 16-byte vectors into scalar code, so AVX2 builds use the widening load directly.
static inline vi widen_u16(const uint16_t *p) {
#ifdef __AVX2__
    return (vi)_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
#else
    vu16 h;
    memcpy(&h, p, sizeof h);
    return __builtin_convertvector(h, vi);
#endif
}

typedef struct {
    const void *w;
    int64_t in, k_chunks;  // k_chunks: ceil(in / 8)
    int kind;
} Weights;

// Inputs 8c .. 8c + 7 of column n's float or bfloat16 weights as float32 (inside `in`).
static inline __attribute__((always_inline)) vf load_w(const Weights *W, int kind, int64_t n,
                                                       int64_t c) {
    const int64_t in = W->in;
    if (kind == WEIGHT_F32) {
        vf v;
        memcpy(&v, (const float *)W->w + n * in + c * LANES, sizeof v);
        return v;
    }
    const vi bits = widen_u16((const uint16_t *)W->w + n * in + c * LANES) << 16;  // bfloat16
    vf v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

// The last, partial chunk (in % 8 != 0), zero past `in`.
static vf load_w_tail(const Weights *W, int64_t n, int64_t c) {
    float tail[LANES] = {0};
    for (int64_t i = c * LANES; i < W->in; i++) {
        const int64_t at = n * W->in + i;
        tail[i - c * LANES] = W->kind == WEIGHT_F32 ? ((const float *)W->w)[at]
                                                    : bf16_to_float(((const uint16_t *)W->w)[at]);
    }
    vf v;
    memcpy(&v, tail, sizeof v);
    return v;
}

// Columns n0 .. n0 + NR - 1 (past `out` repeating the last) of bfloat16 weights as
// float32 rows [NR][in] in `dst`: exactly the values `block` multiplies, since widening them
// is exact.
static void unpack_columns(const Weights *W, int64_t n0, int64_t out_features, float *dst) {
    const int64_t in = W->in;
    for (int j = 0; j < NR; j++) {
        const int64_t n = n0 + j < out_features ? n0 + j : out_features - 1;
        float *row = dst + j * in;
        const uint16_t *src = (const uint16_t *)W->w + n * in;
        for (int64_t k = 0; k < in; k++) row[k] = bf16_to_float(src[k]);
    }
}

static inline float reduce_lanes(vf v) {
    const float a = v[0] + v[4], b = v[1] + v[5], c = v[2] + v[6], d = v[3] + v[7];
    return (a + c) + (b + d);
}

// Outputs [r0, r0 + mr) x [n0, n0 + NR) into result[mr][NR] (columns past `out` are computed
// on the last column and dropped). xf: float32 rows, k_chunks * 8 wide, zero-padded.
static inline __attribute__((always_inline)) void block(const float *xf, int64_t r0, int mr,
                                                        const Weights *W, int kind, int64_t n0,
                                                        int64_t out_features, float *result) {
    int64_t cols[NR];
    for (int j = 0; j < NR; j++) cols[j] = n0 + j < out_features ? n0 + j : out_features - 1;
    const int64_t width = W->k_chunks * LANES;
    vf acc[MR][NR];
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < NR; j++) acc[i][j] = (vf){0};
#define ACCUMULATE(c, w)                                                           \
    for (int i = 0; i < mr; i++) {                                                 \
        vf x;                                                                      \
        memcpy(&x, xf + (r0 + i) * width + (c) * LANES, sizeof x);                 \
        for (int j = 0; j < NR; j++) acc[i][j] = multiply_add(acc[i][j], x, w[j]); \
    }
    const int64_t full_chunks = W->in / LANES;
    for (int64_t c = 0; c < full_chunks; c++) {
        vf w[NR];
        for (int j = 0; j < NR; j++) w[j] = load_w(W, kind, cols[j], c);
        ACCUMULATE(c, w)
    }
    if (full_chunks < W->k_chunks) {
        vf w[NR];
        for (int j = 0; j < NR; j++) w[j] = load_w_tail(W, cols[j], full_chunks);
        ACCUMULATE(full_chunks, w)
    }
#undef ACCUMULATE
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < NR; j++) result[i * NR + j] = reduce_lanes(acc[i][j]);
}

// The row-count and weight-kind switches give each (mr, kind) its own unrolled loop.
static void block_any(const float *xf, int64_t r0, int mr, const Weights *W, int64_t n0,
                      int64_t out_features, float *result) {
#define BLOCK_ROWS(kind)                                                      \
    switch (mr) {                                                             \
        case 1: block(xf, r0, 1, W, kind, n0, out_features, result); break;  \
        case 2: block(xf, r0, 2, W, kind, n0, out_features, result); break;  \
        case 3: block(xf, r0, 3, W, kind, n0, out_features, result); break;  \
        default: block(xf, r0, 4, W, kind, n0, out_features, result); break; \
    }
    if (W->kind == WEIGHT_F32)
        BLOCK_ROWS(WEIGHT_F32)
    else
        BLOCK_ROWS(WEIGHT_BF16)
#undef BLOCK_ROWS
}

int linear(const void *x, int64_t x_stride, const void *w, const void *bias, void *out,
           int64_t rows, int64_t in, int64_t out_features, int kind, int is_bf16,
           int num_threads) {
    const Weights W = {w, in, (in + LANES - 1) / LANES, kind};
    const int64_t width = W.k_chunks * LANES;
    float *xf = aligned_alloc(64, ((size_t)(rows * width) * sizeof(float) + 63) & ~(size_t)63);
    if (xf == NULL) return -1;
    for (int64_t r = 0; r < rows; r++) {
        const int64_t src = r * x_stride;
        for (int64_t k = 0; k < in; k++) xf[r * width + k] = load_elem(x, src + k, is_bf16);
        for (int64_t k = in; k < width; k++) xf[r * width + k] = 0.0f;
    }
    const int64_t col_blocks = (out_features + NR - 1) / NR;
    // Threads split the columns; small problems stay on one thread (a fork costs ~10 us).
    const int threads = rows * in * out_features >= (1 << 18) ? num_threads : 1;
    // With more than one block of rows, widening a column block's weights once into float32
    // and running the float32 block over the rows beats widening them again for every 4 rows.
    // unpack_columns gives the values `block` would have made, so either
    // way every output has the same bits.
    const int unpack = kind != WEIGHT_F32 && rows > MR;
#pragma omp parallel num_threads(threads)
    {
        // [NR][in] float32 columns; without it (allocation failed) this thread widens per block
        float *unpacked = unpack ? malloc((size_t)(NR * in) * sizeof(float)) : NULL;
        const Weights U = {unpacked, in, W.k_chunks, WEIGHT_F32};
        // Row chunks keep the float32 rows a thread reads for every column block in its cache.
        for (int64_t r_chunk = 0; r_chunk < rows; r_chunk += ROW_CHUNK) {
            const int64_t r_end = r_chunk + ROW_CHUNK < rows ? r_chunk + ROW_CHUNK : rows;
#pragma omp for schedule(static)
            for (int64_t cb = 0; cb < col_blocks; cb++) {
                const int64_t n0 = cb * NR;
                if (unpacked != NULL) unpack_columns(&W, n0, out_features, unpacked);
                for (int64_t r0 = r_chunk; r0 < r_end; r0 += MR) {
                    const int mr = r_end - r0 < MR ? (int)(r_end - r0) : MR;
                    float result[MR * NR];
                    if (unpacked != NULL)
                        block_any(xf, r0, mr, &U, 0, NR, result);
                    else
                        block_any(xf, r0, mr, &W, n0, out_features, result);
                    for (int i = 0; i < mr; i++) {
                        for (int j = 0; j < NR && n0 + j < out_features; j++) {
                            const int64_t n = n0 + j;
                            float y = result[i * NR + j];
                            if (bias != NULL) y += load_elem(bias, n, is_bf16);
                            store_elem(out, (r0 + i) * out_features + n, y, is_bf16);
                        }
                    }
                }
            }
        }
        free(unpacked);
    }
    free(xf);
    return 0;
}
