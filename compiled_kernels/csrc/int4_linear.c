// Int4 linear layers, y = x W^T (+ bias), multiplying the weights' 4-bit levels by activations
// quantized to 8 bits, in integers: the scheme of GGUF's Q4_1 x Q8 dot products.
//
// Weights: w = level * scale + min per group of 32 inputs, level in 0..15. Activations: each
// row's group of 32 inputs is quantized on its own, step = max|x| / 127 and
// a = round(x * (127 / max|x|)) in -127..127. A group's share of an output is then
//   scale * step * sum(level * a) + min * (step * sum(a))
// where both sums are integers, exact however they are added up. A row's quantization reads
// nothing but that row, so every output is a function of its own row and column only: the
// same bits whatever the batch, the row's place in it or the thread count.
//
// The float order is fixed and plain: for each output, groups in increasing order, two
// multiply-adds per group, y = y + (scale * step) * sum(level * a), then y = y + min *
// (step * sum(a)); then the bias. The multiply-add is fused where the build has FMA, so every
// v3 or v4 CPU gives the same bits; the AVX2 path and the portable one compute the same
// integers.
//
// The weights are laid out for the kernel (compiled_kernels/linear.py, quantize_int4): columns
// in blocks of 8, and for each block and group 128 bytes, four 32-byte vectors m = 0..3 whose
// bytes 4c .. 4c + 3 belong to column c of the block: low nibbles the levels of the group's
// inputs 8m .. 8m + 3, high nibbles those of inputs 8m + 4 .. 8m + 7. So one 32-bit broadcast
// of four activations meets four levels of each of the 8 columns, and the products' sums land
// in the column's lane with no horizontal adds.
//
// x:      [rows, in], rows x_stride elements apart; bfloat16 when is_bf16, else float32
// w:      [out / 8, in / 32, 128] uint8 (in % 32 == 0, out % 8 == 0)
// scales, mins: [out / 8, in / 32, 8] float32
// bias:   [out] in x's element type, or NULL; out: [rows, out], contiguous, x's element type

#include <stdint.h>
#include <string.h>

#ifdef __AVX2__
#include <immintrin.h>
#endif

#include "bf16.h"
#include "q8.h"
#include "vec.h"

enum { GROUP = Q8_GROUP, COLS = 8, BLOCK_BYTES = 128, MR = 4, ROW_CHUNK = 64 };

typedef int32_t vi __attribute__((vector_size(32)));

static inline vf broadcast(float v) { return (vf){v, v, v, v, v, v, v, v}; }

// Rows [r0, r0 + mr) of the 8 columns of block b into acc[mr] (lane c: column 8b + c).
static inline __attribute__((always_inline)) void int4_block(const Quantized *X, int64_t r0, int mr,
                                                        const uint8_t *w, const float *scales,
                                                        const float *mins, int64_t groups,
                                                        int64_t b, vf *acc) {
    for (int i = 0; i < mr; i++) acc[i] = (vf){0};
    for (int64_t g = 0; g < groups; g++) {
        const int64_t at = b * groups + g;
        vi sums[MR];  // lane c: sum(level * a) of column c over the group
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
        // One instruction multiplies 4 unsigned levels by 4 signed activations and adds the
        // products to the column's int32 lane: the same integers as below, in fewer steps.
        __m256i dots[MR];
        for (int i = 0; i < mr; i++) dots[i] = _mm256_setzero_si256();
        const __m256i nibble = _mm256_set1_epi8(15);
        for (int m = 0; m < 4; m++) {
            const __m256i packed = _mm256_loadu_si256((const __m256i *)(w + at * BLOCK_BYTES) + m);
            const __m256i low = _mm256_and_si256(packed, nibble);
            const __m256i high = _mm256_and_si256(_mm256_srli_epi16(packed, 4), nibble);
            for (int i = 0; i < mr; i++) {
                const int8_t *a = X->levels + ((r0 + i) * groups + g) * GROUP + 8 * m;
                int32_t first, second;
                memcpy(&first, a, 4);
                memcpy(&second, a + 4, 4);
                dots[i] = _mm256_dpbusd_epi32(dots[i], low, _mm256_set1_epi32(first));
                dots[i] = _mm256_dpbusd_epi32(dots[i], high, _mm256_set1_epi32(second));
            }
        }
        for (int i = 0; i < mr; i++) sums[i] = (vi)dots[i];
#elif defined(__AVX2__)
        // int16 lanes hold sums of 2 products, at most 2 * 15 * 127, and each adds up 8 of
        // them (at most 30480): exact, no saturation
        __m256i pairs[MR];
        for (int i = 0; i < mr; i++) pairs[i] = _mm256_setzero_si256();
        const __m256i nibble = _mm256_set1_epi8(15);
        for (int m = 0; m < 4; m++) {
            const __m256i packed = _mm256_loadu_si256((const __m256i *)(w + at * BLOCK_BYTES) + m);
            const __m256i low = _mm256_and_si256(packed, nibble);
            const __m256i high = _mm256_and_si256(_mm256_srli_epi16(packed, 4), nibble);
            for (int i = 0; i < mr; i++) {
                const int8_t *a = X->levels + ((r0 + i) * groups + g) * GROUP + 8 * m;
                int32_t first, second;
                memcpy(&first, a, 4);
                memcpy(&second, a + 4, 4);
                pairs[i] = _mm256_add_epi16(
                    pairs[i], _mm256_add_epi16(_mm256_maddubs_epi16(low, _mm256_set1_epi32(first)),
                                               _mm256_maddubs_epi16(high, _mm256_set1_epi32(second))));
            }
        }
        for (int i = 0; i < mr; i++) sums[i] = (vi)_mm256_madd_epi16(pairs[i], _mm256_set1_epi16(1));
#else
        for (int i = 0; i < mr; i++) {
            const int8_t *a = X->levels + ((r0 + i) * groups + g) * GROUP;
            sums[i] = (vi){0};
            for (int m = 0; m < 4; m++)
                for (int c = 0; c < COLS; c++)
                    for (int t = 0; t < 4; t++) {
                        const uint8_t byte = w[at * BLOCK_BYTES + m * 32 + 4 * c + t];
                        sums[i][c] += (byte & 15) * a[8 * m + t] + (byte >> 4) * a[8 * m + 4 + t];
                    }
        }
#endif
        vf scale, min;
        memcpy(&scale, scales + at * COLS, sizeof scale);
        memcpy(&min, mins + at * COLS, sizeof min);
        for (int i = 0; i < mr; i++) {
            const int64_t rg = (r0 + i) * groups + g;
            const vf level_sums = __builtin_convertvector(sums[i], vf);
            acc[i] = multiply_add(acc[i], level_sums, scale * broadcast(X->steps[rg]));
            acc[i] = multiply_add(acc[i], min, broadcast(X->step_sums[rg]));
        }
    }
}

// The row-count switch gives each mr its own unrolled loop.
static void int4_block_any(const Quantized *X, int64_t r0, int mr, const uint8_t *w,
                      const float *scales, const float *mins, int64_t groups, int64_t b,
                      vf *acc) {
    switch (mr) {
        case 1: int4_block(X, r0, 1, w, scales, mins, groups, b, acc); break;
        case 2: int4_block(X, r0, 2, w, scales, mins, groups, b, acc); break;
        case 3: int4_block(X, r0, 3, w, scales, mins, groups, b, acc); break;
        default: int4_block(X, r0, 4, w, scales, mins, groups, b, acc); break;
    }
}

int int4_linear(const void *x, int64_t x_stride, const uint8_t *w, const float *scales,
                const float *mins, const void *bias, void *out, int64_t rows, int64_t in,
                int64_t out_features, int is_bf16, int num_threads) {
    const int64_t groups = in / GROUP;
    Quantized X;
    if (!q8_allocate(&X, rows, groups)) return -1;
    const int64_t col_blocks = out_features / COLS;
    // Threads split the columns; small problems stay on one thread (a fork costs ~10 us).
    const int threads = rows * in * out_features >= (1 << 18) ? num_threads : 1;
    // A few rows are quantized before the fork; more are shared out, at the cost of a barrier.
    const int quantize_in_team = threads > 1 && rows >= 8;
    if (!quantize_in_team)
        for (int64_t r = 0; r < rows; r++) q8_row(x, x_stride, r, groups, is_bf16, &X);
#pragma omp parallel num_threads(threads)
    {
        if (quantize_in_team) {
#pragma omp for schedule(static)
            for (int64_t r = 0; r < rows; r++) q8_row(x, x_stride, r, groups, is_bf16, &X);
        }
        // Row chunks keep the activations a thread reads for every column block in its cache.
        for (int64_t r_chunk = 0; r_chunk < rows; r_chunk += ROW_CHUNK) {
            const int64_t r_end = r_chunk + ROW_CHUNK < rows ? r_chunk + ROW_CHUNK : rows;
#pragma omp for schedule(static)
            for (int64_t b = 0; b < col_blocks; b++) {
                for (int64_t r0 = r_chunk; r0 < r_end; r0 += MR) {
                    const int mr = r_end - r0 < MR ? (int)(r_end - r0) : MR;
                    vf acc[MR];
                    int4_block_any(&X, r0, mr, w, scales, mins, groups, b, acc);
                    for (int i = 0; i < mr; i++)
                        for (int c = 0; c < COLS; c++) {
                            const int64_t n = b * COLS + c;
                            float y = acc[i][c];
                            if (bias != NULL) y += load_elem(bias, n, is_bf16);
                            store_elem(out, (r0 + i) * out_features + n, y, is_bf16);
                        }
                }
            }
        }
    }
    q8_free(&X);
    return 0;
}
