// Causal attention for one sequence's new tokens (a prefill or a prefill chunk) against its
// context in the paged KV cache: the cached prefix plus the new tokens themselves.
//
// The context's keys are first copied out of the cache as float32, transposed per tile of
// TILE tokens ([tile][head_dim][TILE]), and its values as float32 rows, once per call. Each task
// is then (query head, tile of TILE queries): for every key tile up to the causal limit, the
// scores of a query against TILE keys are one vector of TILE lanes (no horizontal sums), and an
// online softmax folds the tile into the running output. A query's arithmetic depends only on
// its own position and context, not on how many new tokens share the call, so a chunked or
// prefix-cached prefill gives bitwise the same rows as a full one.
//
// Layouts (row-major):
//   q:           [num_new, num_heads, head_dim], rows q_row_stride elements apart
//   k/v cache:   [num_kv_heads, num_blocks, block_size, head_dim]
//   block_table: [ceil(context_len / block_size)] int64
//   out:         [num_new, num_heads, head_dim], contiguous
// Elements are bfloat16 when is_bf16 is set, else float32.
//
// window > 0 (a sliding-window layer): a query at position p sees the keys at p - window + 1
// to p only, and the blocks before the first query's window are never read (they may have been
// freed). softcap > 0 (Gemma 2): scores are capped to softcap * tanh(score / softcap).

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bf16.h"
#include "exp.h"
#include "kernels.h"

// Keys per tile: one vector of float lanes, 16 with AVX-512 and 8 below (16-lane vectors there
// are pairs of registers, and a block of QBLOCK score vectors no longer fits in them).
#ifdef __AVX512F__
#define TILE 16
#else
#define TILE 8
#endif
#define QBLOCK 8      // queries computed together: independent FMA chains, shared key loads
#define MAX_HEAD_DIM 256

typedef float vec16 __attribute__((vector_size(TILE * sizeof(float))));

// The first key a query at position pos sees.
static inline int64_t first_key(int64_t pos, int64_t window) {
    return window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
}

// One query head, up to TILE consecutive queries at positions first_pos.., against every key
// tile they can see. q_rows: [TILE][head_dim], pre-scaled; out: [TILE][head_dim].
static void attend_tile(const float *q_rows, int64_t rows, int64_t first_pos,
                        const vec16 *kt /* [tiles][head_dim] vectors of TILE keys */,
                        const vec16 *vf /* [context][head_dim / TILE] */, int64_t head_dim,
                        int64_t window, float softcap, float *out) {
    const int64_t chunks = head_dim / TILE;
    vec16 acc_out[TILE][MAX_HEAD_DIM / TILE];
    float row_max[TILE], row_sum[TILE];
    for (int64_t i = 0; i < TILE; i++) {
        row_max[i] = -INFINITY;
        row_sum[i] = 0.0f;
        for (int64_t c = 0; c < chunks; c++) acc_out[i][c] = (vec16){0};
    }
    const int64_t last_pos = first_pos + rows - 1;
    for (int64_t k0 = first_key(first_pos, window) / TILE * TILE; k0 <= last_pos; k0 += TILE) {
        const vec16 *kt_tile = kt + (k0 / TILE) * head_dim;
        for (int64_t i0 = 0; i0 < rows; i0 += QBLOCK) {
            // Scores of QBLOCK queries against the tile's TILE keys.
            vec16 s[QBLOCK] = {{0}};
            for (int64_t d = 0; d < head_dim; d++) {
                const vec16 k = kt_tile[d];
                for (int r = 0; r < QBLOCK; r++) s[r] += q_rows[(i0 + r) * head_dim + d] * k;
            }
            // Online softmax: fold the tile into each query's running max, sum and output.
            float p[QBLOCK][TILE];
            float correction[QBLOCK];
            for (int r = 0; r < QBLOCK; r++) {
                const int64_t pos = first_pos + i0 + r;
                // The keys of this tile that pos sees: lo <= j < hi.
                int64_t lo = first_key(pos, window) - k0, hi = pos - k0 + 1;
                if (lo < 0) lo = 0;
                if (hi > TILE) hi = TILE;
                if (i0 + r >= rows) hi = lo;
                float tile_max = -INFINITY;
                for (int64_t j = lo; j < hi; j++) {
                    if (softcap > 0.0f) s[r][j] = softcap * tanhf(s[r][j] / softcap);
                    tile_max = s[r][j] > tile_max ? s[r][j] : tile_max;
                }
                const int64_t i = i0 + r;
                if (hi <= lo) {
                    correction[r] = 1.0f;
                    for (int j = 0; j < TILE; j++) p[r][j] = 0.0f;
                    continue;
                }
                const float new_max = tile_max > row_max[i] ? tile_max : row_max[i];
                correction[r] = exp_approx(row_max[i] - new_max);
                float tile_sum = 0.0f;
                for (int j = 0; j < TILE; j++) {
                    p[r][j] = j >= lo && j < hi ? exp_approx(s[r][j] - new_max) : 0.0f;
                    tile_sum += p[r][j];
                }
                row_max[i] = new_max;
                row_sum[i] = row_sum[i] * correction[r] + tile_sum;
            }
            // Weighted values, one 16-lane chunk of head_dim at a time for all QBLOCK queries.
            for (int64_t c = 0; c < chunks; c++) {
                vec16 o[QBLOCK];
                for (int r = 0; r < QBLOCK; r++) o[r] = acc_out[i0 + r][c] * correction[r];
                const int64_t keys = last_pos - k0 + 1 < TILE ? last_pos - k0 + 1 : TILE;
                for (int64_t j = 0; j < keys; j++) {
                    const vec16 v = vf[(k0 + j) * chunks + c];
                    for (int r = 0; r < QBLOCK; r++) o[r] += p[r][j] * v;
                }
                for (int r = 0; r < QBLOCK; r++) acc_out[i0 + r][c] = o[r];
            }
        }
    }
    for (int64_t i = 0; i < rows; i++) {
        const float inv = 1.0f / row_sum[i];
        for (int64_t c = 0; c < chunks; c++) {
            for (int j = 0; j < TILE; j++) out[i * head_dim + c * TILE + j] = acc_out[i][c][j] * inv;
        }
    }
}

// Returns 0, -1 for an unsupported head_dim, -2 when out of memory.
int paged_prefill_attention(const void *q, const void *k_cache, const void *v_cache,
                            const int64_t *block_table, void *out, int64_t num_new,
                            int64_t context_len, int64_t num_heads, int64_t num_kv_heads,
                            int64_t head_dim, int64_t block_size, int64_t num_blocks,
                            int64_t q_row_stride, float scale, int64_t window, float softcap,
                            int is_bf16, int num_threads) {
    if (head_dim > MAX_HEAD_DIM || head_dim % TILE != 0) return -1;
    const int64_t group = num_heads / num_kv_heads;
    const int64_t tiles = (context_len + TILE - 1) / TILE;
    const int64_t per_head = tiles * TILE * head_dim;  // floats per kv head, padded to tiles
    // Vector-aligned; zeroed so that the keys past the context in the last tile are finite.
    const size_t bytes = (size_t)(num_kv_heads * per_head) * sizeof(float);
    float *kt = aligned_alloc(sizeof(vec16), bytes);
    float *vf = aligned_alloc(sizeof(vec16), bytes);
    if (kt != NULL) memset(kt, 0, bytes);
    if (vf != NULL) memset(vf, 0, bytes);
    if (kt == NULL || vf == NULL) {
        free(kt);
        free(vf);
        return -2;
    }
    const int64_t first_pos = context_len - num_new;  // position of the first new token
    const int64_t q_tiles = (num_new + TILE - 1) / TILE;
    const int64_t first = first_key(first_pos, window);  // the first key any query sees
    const int64_t seen = context_len - first;

#pragma omp parallel num_threads(num_threads)
    {
        // Copy the context out of the cache: keys transposed per tile, values as rows.
#pragma omp for schedule(static)
        for (int64_t task = 0; task < num_kv_heads * seen; task++) {
            const int64_t h = task / seen, t = first + task % seen;
            const int64_t slot = (h * num_blocks + block_table[t / block_size]) * block_size +
                                 t % block_size;
            float *kt_tile = kt + h * per_head + (t / TILE) * head_dim * TILE;
            float *v_row = vf + h * per_head + t * head_dim;
            for (int64_t d = 0; d < head_dim; d++) {
                kt_tile[d * TILE + t % TILE] = load_elem(k_cache, slot * head_dim + d, is_bf16);
                v_row[d] = load_elem(v_cache, slot * head_dim + d, is_bf16);
            }
        }
        // (the implicit barrier of the loop above: every tile is ready)
        float q_rows[(TILE + QBLOCK) * MAX_HEAD_DIM] = {0};  // + a block of padding rows
        float result[TILE * MAX_HEAD_DIM];
#pragma omp for schedule(dynamic, 1)
        for (int64_t task = 0; task < num_heads * q_tiles; task++) {
            // Later query tiles see more keys: hand them out first for a better balance.
            const int64_t head = task % num_heads, qt = q_tiles - 1 - task / num_heads;
            const int64_t row0 = qt * TILE;
            const int64_t rows = num_new - row0 < TILE ? num_new - row0 : TILE;
            for (int64_t i = 0; i < rows; i++) {
                const int64_t offset = (row0 + i) * q_row_stride + head * head_dim;
                for (int64_t d = 0; d < head_dim; d++) {
                    q_rows[i * head_dim + d] = load_elem(q, offset + d, is_bf16) * scale;
                }
            }
            const int64_t kv_head = head / group;
            attend_tile(q_rows, rows, first_pos + row0, (const vec16 *)(kt + kv_head * per_head),
                        (const vec16 *)(vf + kv_head * per_head), head_dim, window, softcap,
                        result);
            for (int64_t i = 0; i < rows; i++) {
                const int64_t offset = ((row0 + i) * num_heads + head) * head_dim;
                for (int64_t d = 0; d < head_dim; d++) {
                    store_elem(out, offset + d, result[i * head_dim + d], is_bf16);
                }
            }
        }
    }
    free(kt);
    free(vf);
    return 0;
}
