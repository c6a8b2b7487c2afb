// Int8 linear layers, y = x W^T (+ bias), multiplying 8-bit weights by activations quantized to
// 16 bits, in integers. The weights are GGUF's Q8_0; the activations keep 16 bits (not Q8's 8)
// because the vocabulary projection, the layer this serves most, loses perplexity to 8-bit
// activations (+0.8% on the embedded model in float32), and at few rows the kernel is bound by
// reading the weights, not by the multiplies.
//
// Weights: w = level * scale per group of 32 inputs, level in -127..127. Activations: each
// row's group of 32 inputs quantized on its own, step = max|x| / 32767 and a = round(x * (32767
// / max|x|)), rounding half to even. A group's share of an output is
//   scale * step * sum(level * a)
// where the sum is an integer, exact (at most 32 * 127 * 32767 < 2^31), converted to float
// with one rounding. A row's quantization reads nothing but that row, so every output is a
// function of its own row and column only: the same bits whatever the batch, the row's place in
// it or the thread count.
//
// The float order is fixed and plain: for each output, groups in increasing order, one
// multiply-add each, y = y + (scale * step) * float(sum(level * a)); then the bias. The
// multiply-add is fused where the build has FMA, so every v3 or v4 CPU gives the same bits; the
// AVX2 path and the portable one compute the same integers.
//
// The weights are laid out for the kernel (compiled_kernels/linear.py, quantize_int8): columns
// in blocks of 8, and for each block and group 256 bytes, sixteen 16-byte vectors m = 0..15
// whose bytes 2c, 2c + 1 are column c's levels of the group's inputs 2m, 2m + 1. Widened to
// int16, one vector meets a 32-bit broadcast of two activations in one multiply-add of pairs,
// and the sums land in the column's lane with no horizontal adds. Columns past `out` and inputs
// past `in` are zero padding.
//
// x:      [rows, in], rows x_stride elements apart; bfloat16 when is_bf16, else float32
// w:      [ceil(out / 8), ceil(in / 32), 256] int8
// scales: [ceil(out / 8), ceil(in / 32), 8] float32
// bias:   [out] in x's element type, or NULL; out: [rows, out], contiguous, x's element type

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef __AVX2__
#include <immintrin.h>
#endif

#include "bf16.h"
#include "vec.h"

enum { GROUP = 32, COLS = 8, BLOCK_BYTES = 256, MR = 4, ROW_CHUNK = 64 };
#define LEVELS 32767.0f

typedef int32_t vi __attribute__((vector_size(32)));

// Activations quantized group by group: levels [rows][groups * 32], steps [rows][groups].
typedef struct {
    int16_t *levels;
    float *steps;  // max|x| / 32767 (NaN where the group holds inf or NaN)
} Quantized;

// Row r of x (`in` inputs, the last group zero-padded) into row r of X.
static void quantize_row(const void *x, int64_t x_stride, int64_t r, int64_t in, int is_bf16,
                         const Quantized *X) {
    const int64_t groups = (in + GROUP - 1) / GROUP;
    for (int64_t g = 0; g < groups; g++) {
        float v[GROUP], amax = 0.0f;
        int finite = 1;
        const int64_t first = g * GROUP;
        for (int64_t k = 0; k < GROUP; k++) {
            v[k] = first + k < in ? load_elem(x, r * x_stride + first + k, is_bf16) : 0.0f;
            amax = fmaxf(amax, fabsf(v[k]));
            finite &= isfinite(v[k]);
        }
        int16_t *a = X->levels + (r * groups + g) * GROUP;
        if (!finite || amax == 0.0f) {  // inf or NaN poisons the outputs; zero is zero
            memset(a, 0, GROUP * sizeof *a);
            X->steps[r * groups + g] = finite ? 0.0f : NAN;
            continue;
        }
        const float inverse = LEVELS / amax;
        for (int k = 0; k < GROUP; k++) a[k] = (int16_t)nearbyintf(v[k] * inverse);
        X->steps[r * groups + g] = amax / LEVELS;
    }
}

static inline vf broadcast(float v) { return (vf){v, v, v, v, v, v, v, v}; }

// Rows [r0, r0 + mr) of the 8 columns of block b into acc[mr] (lane c: column 8b + c).
static inline __attribute__((always_inline)) void int8_block(const Quantized *X, int64_t r0, int mr,
                                                        const int8_t *w, const float *scales,
                                                        int64_t groups, int64_t b, vf *acc) {
    for (int i = 0; i < mr; i++) acc[i] = (vf){0};
    for (int64_t g = 0; g < groups; g++) {
        const int64_t at = b * groups + g;
        vi sums[MR];  // lane c: sum(level * a) of column c over the group
#ifdef __AVX2__
        __m256i pairs[MR];
        for (int i = 0; i < mr; i++) pairs[i] = _mm256_setzero_si256();
        for (int m = 0; m < 16; m++) {
            const __m256i levels =
                _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + at * BLOCK_BYTES) + m));
            for (int i = 0; i < mr; i++) {
                int32_t two;
                memcpy(&two, X->levels + ((r0 + i) * groups + g) * GROUP + 2 * m, 4);
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
                pairs[i] = _mm256_dpwssd_epi32(pairs[i], levels, _mm256_set1_epi32(two));
#else
                pairs[i] = _mm256_add_epi32(pairs[i],
                                            _mm256_madd_epi16(levels, _mm256_set1_epi32(two)));
#endif
            }
        }
        for (int i = 0; i < mr; i++) sums[i] = (vi)pairs[i];
#else
        for (int i = 0; i < mr; i++) {
            const int16_t *a = X->levels + ((r0 + i) * groups + g) * GROUP;
            sums[i] = (vi){0};
            for (int m = 0; m < 16; m++)
                for (int c = 0; c < COLS; c++)
                    for (int t = 0; t < 2; t++)
                        sums[i][c] += w[at * BLOCK_BYTES + m * 16 + 2 * c + t] * a[2 * m + t];
        }
#endif
        vf scale;
        memcpy(&scale, scales + at * COLS, sizeof scale);
        for (int i = 0; i < mr; i++) {
            const vf level_sums = __builtin_convertvector(sums[i], vf);
            const vf factor = scale * broadcast(X->steps[(r0 + i) * groups + g]);
            acc[i] = multiply_add(acc[i], level_sums, factor);
        }
    }
}

// The row-count switch gives each mr its own unrolled loop.
static void int8_block_any(const Quantized *X, int64_t r0, int mr, const int8_t *w,
                           const float *scales, int64_t groups, int64_t b, vf *acc) {
    switch (mr) {
        case 1: int8_block(X, r0, 1, w, scales, groups, b, acc); break;
        case 2: int8_block(X, r0, 2, w, scales, groups, b, acc); break;
        case 3: int8_block(X, r0, 3, w, scales, groups, b, acc); break;
        default: int8_block(X, r0, 4, w, scales, groups, b, acc); break;
    }
}

int int8_linear(const void *x, int64_t x_stride, const int8_t *w, const float *scales,
                const void *bias, void *out, int64_t rows, int64_t in, int64_t out_features,
                int is_bf16, int num_threads) {
    const int64_t groups = (in + GROUP - 1) / GROUP;
    Quantized X = {malloc((size_t)(rows * groups * GROUP) * sizeof(int16_t)),
                   malloc((size_t)(rows * groups) * sizeof(float))};
    if (X.levels == NULL || X.steps == NULL) {
        free(X.levels), free(X.steps);
        return -1;
    }
    const int64_t col_blocks = (out_features + COLS - 1) / COLS;
    // Threads split the columns; small problems stay on one thread (a fork costs ~10 us).
    const int threads = rows * in * out_features >= (1 << 18) ? num_threads : 1;
    // A few rows are quantized before the fork; more are shared out, at the cost of a barrier.
    const int quantize_in_team = threads > 1 && rows >= 8;
    if (!quantize_in_team)
        for (int64_t r = 0; r < rows; r++) quantize_row(x, x_stride, r, in, is_bf16, &X);
#pragma omp parallel num_threads(threads)
    {
        if (quantize_in_team) {
#pragma omp for schedule(static)
            for (int64_t r = 0; r < rows; r++) quantize_row(x, x_stride, r, in, is_bf16, &X);
        }
        // Row chunks keep the activations a thread reads for every column block in its cache.
        for (int64_t r_chunk = 0; r_chunk < rows; r_chunk += ROW_CHUNK) {
            const int64_t r_end = r_chunk + ROW_CHUNK < rows ? r_chunk + ROW_CHUNK : rows;
#pragma omp for schedule(static)
            for (int64_t b = 0; b < col_blocks; b++) {
                for (int64_t r0 = r_chunk; r0 < r_end; r0 += MR) {
                    const int mr = r_end - r0 < MR ? (int)(r_end - r0) : MR;
                    vf acc[MR];
                    int8_block_any(&X, r0, mr, w, scales, groups, b, acc);
                    for (int i = 0; i < mr; i++)
                        for (int c = 0; c < COLS && b * COLS + c < out_features; c++) {
                            const int64_t n = b * COLS + c;
                            float y = acc[i][c];
                            if (bias != NULL) y += load_elem(bias, n, is_bf16);
                            store_elem(out, (r0 + i) * out_features + n, y, is_bf16);
                        }
                }
            }
        }
    }
    free(X.levels), free(X.steps);
    return 0;
}
