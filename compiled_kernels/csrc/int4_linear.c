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
// v3 or v4 CPU gives the same bits; the AMX, VNNI and AVX2 paths and the portable one compute
// the same integers.
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

#define _GNU_SOURCE  // syscall(), for the tile permission (amx.h)
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
#include "q8.h"
#include "vec.h"

enum { GROUP = Q8_GROUP, BLOCK_BYTES = 128, MR = 4, ROW_CHUNK = 64 };

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
#ifdef __AVX2__
        // With VNNI one instruction multiplies 4 unsigned levels by 4 signed activations and
        // adds them to the column's int32 lane. With AVX2, int16 lanes hold sums of 2
        // products, at most 2 * 15 * 127, and each adds up 8 of them (at most 30480): exact, no
        // saturation, and widened to int32 at the end. The same integers either way.
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
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
                dots[i] = _mm256_dpbusd_epi32(dots[i], low, _mm256_set1_epi32(first));
                dots[i] = _mm256_dpbusd_epi32(dots[i], high, _mm256_set1_epi32(second));
#else
                const __m256i products = _mm256_add_epi16(
                    _mm256_maddubs_epi16(low, _mm256_set1_epi32(first)),
                    _mm256_maddubs_epi16(high, _mm256_set1_epi32(second)));
                dots[i] = _mm256_add_epi16(dots[i], products);
                // Integer sums may be regrouped; left free, the compiler computes every
                // product of the group first and spills them. This keeps one running sum a row.
                __asm__("" : "+x"(dots[i]));
#endif
            }
        }
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
        for (int i = 0; i < mr; i++) sums[i] = (vi)dots[i];
#else
        for (int i = 0; i < mr; i++) sums[i] = (vi)_mm256_madd_epi16(dots[i], _mm256_set1_epi16(1));
#endif
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

#ifdef __AMX_INT8__
// With AMX, 16 rows of 16 columns (blocks b and b + 1) at a time, a tile instruction per group.
enum { PAIR = 2 * COLS, TILE_BYTES = GROUP * PAIR };

// Tile 0 the sums [16 rows][16 columns] int32, tile 1 the activations [16 rows][32 inputs] int8,
// tile 2 the levels [8][16 columns x 4 inputs] uint8; tiles 3 to 5 alike, for the next group.
static void amx_configure(void) {
    TileConfig config = {.palette = 1};
    config.rows[0] = TILE_ROWS, config.bytes_per_row[0] = PAIR * 4;
    config.rows[1] = TILE_ROWS, config.bytes_per_row[1] = GROUP;
    config.rows[2] = GROUP / 4, config.bytes_per_row[2] = PAIR * 4;
    for (int t = 3; t < 6; t++)  // the second set, for the next group
        config.rows[t] = config.rows[t - 3], config.bytes_per_row[t] = config.bytes_per_row[t - 3];
    _tile_loadconfig(&config);
}

// The levels of blocks b and b + 1, every group, as the tile instruction reads them: per group
// 8 rows of 64 bytes, row k holding inputs 4k .. 4k + 3 of the 16 columns. A block's vector m
// holds, per column, inputs 8m .. 8m + 3 in its low nibbles and 8m + 4 .. 8m + 7 in its high
// ones: half of rows 2m and 2m + 1.
static void amx_levels(const uint8_t *w, int64_t groups, int64_t b, uint8_t *tiles) {
    const __m256i nibble = _mm256_set1_epi8(15);
    for (int64_t g = 0; g < groups; g++)
        for (int half = 0; half < 2; half++) {
            const __m256i *block = (const __m256i *)(w + ((b + half) * groups + g) * BLOCK_BYTES);
            uint8_t *tile = tiles + g * TILE_BYTES + half * 32;
            for (int m = 0; m < 4; m++) {
                const __m256i packed = _mm256_loadu_si256(block + m);
                const __m256i low = _mm256_and_si256(packed, nibble);
                const __m256i high = _mm256_and_si256(_mm256_srli_epi16(packed, 4), nibble);
                _mm256_storeu_si256((__m256i *)(tile + 2 * m * 64), low);
                _mm256_storeu_si256((__m256i *)(tile + (2 * m + 1) * 64), high);
            }
        }
}

// Group g's sums into tile C, from activation tile A and level tile L (tile numbers).
#define AMX_DOTS(C, A, L, g)                                                           \
    do {                                                                               \
        _tile_zero(C);                                                                 \
        _tile_loadd(A, X->levels + (r0 * groups + (g)) * GROUP, groups * GROUP);       \
        _tile_loadd(L, tiles + (g) * TILE_BYTES, PAIR * 4);                            \
        _tile_dpbsud(C, A, L); /* signed activations times unsigned levels */          \
    } while (0)

// Rows [r0, r0 + 16) of blocks b and b + 1 into acc[2 * i + k] (row i, block b + k). Two sets
// of tiles alternate, so that one group's tile work runs while the previous group's sums go
// through the float steps (a tile has no renaming: reusing one waits for its last reader).
static void amx_tile(const Quantized *X, int64_t r0, const uint8_t *tiles, const float *scales,
                     const float *mins, int64_t groups, int64_t b, vf *acc) {
    __m512 sum[TILE_ROWS];
    for (int i = 0; i < TILE_ROWS; i++) sum[i] = _mm512_setzero_ps();
    int32_t dots[TILE_ROWS][PAIR];
    AMX_DOTS(0, 1, 2, 0);
    for (int64_t g = 0; g < groups; g++) {
        if (g % 2 == 0) {
            if (g + 1 < groups) AMX_DOTS(3, 4, 5, g + 1);
            _tile_stored(0, dots, PAIR * 4);
        } else {
            if (g + 1 < groups) AMX_DOTS(0, 1, 2, g + 1);
            _tile_stored(3, dots, PAIR * 4);
        }
        const __m512 scale = two_blocks(scales, groups, b, g), min = two_blocks(mins, groups, b, g);
        for (int i = 0; i < TILE_ROWS; i++) {
            const int64_t rg = (r0 + i) * groups + g;
            const __m512 level_sums = _mm512_cvtepi32_ps(_mm512_loadu_si512(dots[i]));
            const __m512 factor = _mm512_mul_ps(scale, _mm512_set1_ps(X->steps[rg]));
            sum[i] = _mm512_fmadd_ps(level_sums, factor, sum[i]);
            sum[i] = _mm512_fmadd_ps(min, _mm512_set1_ps(X->step_sums[rg]), sum[i]);
        }
    }
    for (int i = 0; i < TILE_ROWS; i++) memcpy(acc + 2 * i, sum + i, sizeof sum[i]);
}

// Rows [0, tile_rows) of blocks [0, 2 * pairs), inside the caller's parallel region.
// tiles: this thread's room for a pair's levels, groups * TILE_BYTES.
static void amx_rows(const Quantized *X, int64_t tile_rows, int64_t pairs, const uint8_t *w,
                     const float *scales, const float *mins, const void *bias, void *out,
                     int64_t groups, int64_t out_features, int is_bf16, uint8_t *tiles) {
    amx_configure();
#pragma omp for schedule(guided)
    for (int64_t pair = 0; pair < pairs; pair++) {
        amx_levels(w, groups, 2 * pair, tiles);
        for (int64_t r0 = 0; r0 < tile_rows; r0 += TILE_ROWS) {
            vf acc[2 * TILE_ROWS];
            amx_tile(X, r0, tiles, scales, mins, groups, 2 * pair, acc);
            store_rows(acc, r0, TILE_ROWS, 2 * pair, PAIR, bias, out, out_features, is_bf16);
        }
    }
    _tile_release();
}
#endif

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
    // Tiles take whole tiles of 16 rows of pairs of blocks; the vector path the rest.
    int64_t tile_rows = 0, pairs = 0;
    uint8_t *tiles = NULL;  // each thread's levels of one pair of blocks
#ifdef __AMX_INT8__
    if (rows >= TILE_ROWS && col_blocks >= 2 && amx_allowed()) {
        tiles = malloc((size_t)(threads * groups * TILE_BYTES));
        if (tiles != NULL) tile_rows = rows / TILE_ROWS * TILE_ROWS, pairs = col_blocks / 2;
    }
#endif
    if (!quantize_in_team)
        for (int64_t r = 0; r < rows; r++) q8_row(x, x_stride, r, groups, is_bf16, &X);
#pragma omp parallel num_threads(threads)
    {
        if (quantize_in_team) {
#pragma omp for schedule(guided)
            for (int64_t r = 0; r < rows; r++) q8_row(x, x_stride, r, groups, is_bf16, &X);
        }
#ifdef __AMX_INT8__
        if (pairs)
            amx_rows(&X, tile_rows, pairs, w, scales, mins, bias, out, groups, out_features,
                     is_bf16, tiles + omp_get_thread_num() * groups * TILE_BYTES);
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
                    int4_block_any(&X, r0, mr, w, scales, mins, groups, b, acc);
                    store_rows(acc, r0, mr, b, COLS, bias, out, out_features, is_bf16);
                }
            }
        }
    }
    free(tiles);
    q8_free(&X);
    return 0;
}
