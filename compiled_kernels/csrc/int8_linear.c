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
// AMX, VNNI and AVX2 paths and the portable one compute the same integers.
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

#define _GNU_SOURCE  // syscall(), for the tile permission (amx.h)
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#ifdef __AVX2__
#include <immintrin.h>
#endif

#include "amx.h"
#include "bf16.h"
#include "column_blocks.h"
#include "kernels.h"
#include "vec.h"

enum { GROUP = 32, BLOCK_BYTES = 256, MR = 4, ROW_CHUNK = 64 };
#define LEVELS 32767.0f

typedef int32_t vi __attribute__((vector_size(32)));

// Activations quantized group by group: levels [rows][groups * 32], steps [rows][groups].
typedef struct {
    int16_t *levels;
    float *steps;  // max|x| / 32767 (NaN where the group holds inf or NaN)
    // For the tiles, which multiply bytes: each level as high * 256 + low, the same shape as
    // levels (NULL when no tiles run).
    int8_t *high;
    uint8_t *low;
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
    if (X->high != NULL)
        for (int64_t k = r * groups * GROUP; k < (r + 1) * groups * GROUP; k++)
            X->high[k] = (int8_t)(X->levels[k] >> 8), X->low[k] = (uint8_t)(X->levels[k] & 255);
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
                __asm__("" : "+x"(pairs[i]));  // one running sum a row (see int4_linear.c)
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

#ifdef __AMX_INT8__
// With AMX, 16 rows of 16 columns (blocks b and b + 1) at a time: per group one tile
// instruction for the activations' high bytes and one for their low bytes.
enum { PAIR = 2 * COLS, TILE_BYTES = GROUP * PAIR };

// Tiles 0 and 1 the sums of the high and the low bytes [16 rows][16 columns] int32, tiles 2
// and 3 those bytes [16 rows][32 inputs], tile 4 the levels [8][16 columns x 4 inputs] int8.
static void amx_configure(void) {
    TileConfig config = {.palette = 1};
    for (int t = 0; t < 2; t++) config.rows[t] = TILE_ROWS, config.bytes_per_row[t] = PAIR * 4;
    for (int t = 2; t < 4; t++) config.rows[t] = TILE_ROWS, config.bytes_per_row[t] = GROUP;
    config.rows[4] = GROUP / 4, config.bytes_per_row[4] = PAIR * 4;
    _tile_loadconfig(&config);
}

// The levels of blocks b and b + 1, every group, as the tile instruction reads them: per group
// 8 rows of 64 bytes, row k holding inputs 4k .. 4k + 3 of the 16 columns. A block's vectors
// 2k and 2k + 1 hold each column's inputs (4k, 4k + 1) and (4k + 2, 4k + 3): interleaving their
// 16-bit units puts a column's four together.
static void amx_levels(const int8_t *w, int64_t groups, int64_t b, int8_t *tiles) {
    for (int64_t g = 0; g < groups; g++)
        for (int half = 0; half < 2; half++) {
            const __m128i *block = (const __m128i *)(w + ((b + half) * groups + g) * BLOCK_BYTES);
            int8_t *tile = tiles + g * TILE_BYTES + half * 32;
            for (int k = 0; k < 8; k++) {
                const __m128i even = _mm_loadu_si128(block + 2 * k);
                const __m128i odd = _mm_loadu_si128(block + 2 * k + 1);
                _mm_storeu_si128((__m128i *)(tile + k * 64), _mm_unpacklo_epi16(even, odd));
                _mm_storeu_si128((__m128i *)(tile + k * 64 + 16), _mm_unpackhi_epi16(even, odd));
            }
        }
}

// Rows [r0, r0 + 16) of blocks b and b + 1 into acc[2 * i + k] (row i, block b + k).
static void amx_tile(const Quantized *X, int64_t r0, const int8_t *tiles, const float *scales,
                     int64_t groups, int64_t b, vf *acc) {
    __m512 sum[TILE_ROWS];
    for (int i = 0; i < TILE_ROWS; i++) sum[i] = _mm512_setzero_ps();
    int32_t high[TILE_ROWS][PAIR], low[TILE_ROWS][PAIR];
    for (int64_t g = 0; g < groups; g++) {
        const int64_t at = (r0 * groups + g) * GROUP;
        _tile_zero(0);
        _tile_zero(1);
        _tile_loadd(2, X->high + at, groups * GROUP);
        _tile_loadd(3, X->low + at, groups * GROUP);
        _tile_loadd(4, tiles + g * TILE_BYTES, PAIR * 4);
        _tile_dpbssd(0, 2, 4);  // signed high bytes times signed levels
        _tile_dpbusd(1, 3, 4);  // unsigned low bytes times signed levels
        _tile_stored(0, high, PAIR * 4);
        _tile_stored(1, low, PAIR * 4);
        const __m512 scale = two_blocks(scales, groups, b, g);
        for (int i = 0; i < TILE_ROWS; i++) {
            const __m512i dots = _mm512_add_epi32(
                _mm512_slli_epi32(_mm512_loadu_si512(high[i]), 8), _mm512_loadu_si512(low[i]));
            const float step = X->steps[(r0 + i) * groups + g];
            const __m512 factor = _mm512_mul_ps(scale, _mm512_set1_ps(step));
            sum[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dots), factor, sum[i]);
        }
    }
    for (int i = 0; i < TILE_ROWS; i++) memcpy(acc + 2 * i, sum + i, sizeof sum[i]);
}

// Rows [0, tile_rows) of blocks [0, 2 * pairs), inside the caller's parallel region; tiles:
// this thread's room for a pair's levels, groups * TILE_BYTES.
static void amx_rows(const Quantized *X, int64_t tile_rows, int64_t pairs, const int8_t *w,
                     const float *scales, const void *bias, void *out, int64_t groups,
                     int64_t out_features, int is_bf16, int8_t *tiles) {
    amx_configure();
#pragma omp for schedule(guided)
    for (int64_t pair = 0; pair < pairs; pair++) {
        amx_levels(w, groups, 2 * pair, tiles);
        for (int64_t r0 = 0; r0 < tile_rows; r0 += TILE_ROWS) {
            vf acc[2 * TILE_ROWS];
            amx_tile(X, r0, tiles, scales, groups, 2 * pair, acc);
            store_rows(acc, r0, TILE_ROWS, 2 * pair, PAIR, bias, out, out_features, is_bf16);
        }
    }
    _tile_release();
}
#endif

int int8_linear(const void *x, int64_t x_stride, const int8_t *w, const float *scales,
                const void *bias, void *out, int64_t rows, int64_t in, int64_t out_features,
                int is_bf16, int num_threads) {
    const int64_t groups = (in + GROUP - 1) / GROUP;
    Quantized X = {malloc((size_t)(rows * groups * GROUP) * sizeof(int16_t)),
                   malloc((size_t)(rows * groups) * sizeof(float)), NULL, NULL};
    if (X.levels == NULL || X.steps == NULL) {
        free(X.levels), free(X.steps);
        return -1;
    }
    const int64_t col_blocks = (out_features + COLS - 1) / COLS;
    // Threads split the columns; small problems stay on one thread (a fork costs ~10 us).
    const int threads = rows * in * out_features >= (1 << 18) ? num_threads : 1;
    // Tiles take whole tiles of 16 rows of pairs of blocks; the vector path the rest.
    int64_t tile_rows = 0, pairs = 0;
    int8_t *tiles = NULL;  // each thread's levels of one pair of blocks
#ifdef __AMX_INT8__
    if (rows >= TILE_ROWS && col_blocks >= 2 && amx_allowed()) {
        tiles = malloc((size_t)(threads * groups * TILE_BYTES));
        X.high = malloc((size_t)(rows * groups * GROUP));
        X.low = malloc((size_t)(rows * groups * GROUP));
        if (tiles != NULL && X.high != NULL && X.low != NULL)
            tile_rows = rows / TILE_ROWS * TILE_ROWS, pairs = col_blocks / 2;
        else
            free(X.high), free(X.low), X.high = NULL, X.low = NULL;
    }
#endif
    // A few rows are quantized before the fork; more are shared out, at the cost of a barrier.
    const int quantize_in_team = threads > 1 && rows >= 8;
    if (!quantize_in_team)
        for (int64_t r = 0; r < rows; r++) quantize_row(x, x_stride, r, in, is_bf16, &X);
#pragma omp parallel num_threads(threads)
    {
        if (quantize_in_team) {
#pragma omp for schedule(guided)
            for (int64_t r = 0; r < rows; r++) quantize_row(x, x_stride, r, in, is_bf16, &X);
        }
#ifdef __AMX_INT8__
        if (pairs)
            amx_rows(&X, tile_rows, pairs, w, scales, bias, out, groups, out_features, is_bf16,
                     tiles + omp_get_thread_num() * groups * TILE_BYTES);
#endif
        // Row chunks keep the activations a thread reads for every column block in its cache.
        // Guided schedules, here and above: a thread the OS preempts (the server's other
        // threads share these cores) leaves its remaining blocks to the others instead of
        // holding up the barrier. Which thread computes a block never changes its bits.
        for (int64_t r_chunk = 0; r_chunk < rows; r_chunk += ROW_CHUNK) {
            const int64_t r_end = r_chunk + ROW_CHUNK < rows ? r_chunk + ROW_CHUNK : rows;
#pragma omp for schedule(guided)
            for (int64_t b = 0; b < col_blocks; b++) {
                const int64_t first = b < 2 * pairs && tile_rows > r_chunk ? tile_rows : r_chunk;
                for (int64_t r0 = first; r0 < r_end; r0 += MR) {
                    const int mr = r_end - r0 < MR ? (int)(r_end - r0) : MR;
                    vf acc[MR];
                    int8_block_any(&X, r0, mr, w, scales, groups, b, acc);
                    store_rows(acc, r0, mr, b, COLS, bias, out, out_features, is_bf16);
                }
            }
        }
    }
    free(tiles), free(X.high), free(X.low);
    free(X.levels), free(X.steps);
    return 0;
}
