// Causal attention for one sequence's new tokens (a prefill or a prefill chunk) against its
// context in the paged KV cache: the cached prefix plus the new tokens themselves.
//
// The context's keys and values are first copied out of the cache as float32 rows, once per
// call. Each task is then (query head, block of consecutive queries), and a vector's lanes are
// the block's queries: for each step of KEYS keys, a key's scores against the block are
// vectors (multiply-adds of the queries' element d by the key's, broadcast), the causal mask
// and the online softmax are lane-wise vector operations, and the weighted values go into
// vectors per element of head_dim. No horizontal sums, no scalar exponentials. A query's
// arithmetic depends only on its own position and context (a step it cannot see changes
// nothing: its weights are 0 and its correction exactly 1), not on the other lanes or on how
// many new tokens share the call, so a chunked or prefix-cached prefill gives bitwise the same
// rows as a full one.
//
// Layouts (row-major):
//   q:           [num_new, num_heads, head_dim], rows q_row_stride elements apart
//   k/v cache:   [num_kv_heads, num_blocks, block_size, head_dim]
//   block_table: [ceil(context_len / block_size)] int64
//   out:         [num_new, num_heads, head_dim], contiguous
// q and out are bfloat16 when is_bf16 is set, else float32; the cache is when cache_bf16 is.
//
// window > 0 (a sliding-window layer): a query at position p sees the keys at p - window + 1
// to p only, and the blocks before the first query's window are never read (they may have been
// freed). softcap > 0 (Gemma 2): scores are capped to softcap * tanh(score / softcap).

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef __AVX__
#include <immintrin.h>
#endif

#include "bf16.h"
#include "exp.h"
#include "kernels.h"
#include "window.h"

// Queries per block: one vector of float lanes, 16 with AVX-512 and 8 below.
#ifdef __AVX512F__
#define LANES 16
#else
#define LANES 8
#endif
// A block is QV vectors of queries, a step KEYS keys, and the weighted values go E elements of
// head_dim at a time: the accumulators fit in AVX2's 16 registers, and each broadcast key or
// value element serves QV vectors. Other shapes measured within ~10% on Zen 3 (AVX2).
#define QV 2
#define KEYS 4
#define E 2
#define BLOCK (QV * LANES)  // queries per block
#define MAX_HEAD_DIM 256

typedef float vq __attribute__((vector_size(LANES * sizeof(float))));
typedef int32_t vqi __attribute__((vector_size(LANES * sizeof(int32_t))));

static inline vq multiply_add_lanes(vq acc, vq x, vq y) {
#if defined(__AVX512F__)
    return (vq)_mm512_fmadd_ps((__m512)x, (__m512)y, (__m512)acc);
#elif defined(__FMA__)
    return (vq)_mm256_fmadd_ps((__m256)x, (__m256)y, (__m256)acc);
#else
    return acc + x * y;
#endif
}

static inline vq splat(float v) {
#if defined(__AVX512F__)
    return (vq)_mm512_set1_ps(v);
#elif defined(__AVX__)
    return (vq)_mm256_set1_ps(v);
#else
    vq r;
    for (int i = 0; i < LANES; i++) r[i] = v;
    return r;
#endif
}

// Lane-wise mask ? a : b, mask lanes all ones or all zeros (a vector comparison's result).
static inline vq select_lanes(vqi mask, vq a, vq b) {
    return (vq)((mask & (vqi)a) | (~mask & (vqi)b));
}

// exp.h's exp_approx on every lane: the same operations, so the same values.
static inline vq exp_lanes(vq x) { return EXP_LANES(x, vqi); }

// One query head's queries at positions first_pos .. first_pos + rows - 1 (rows <= BLOCK),
// lane i of vector v the query at first_pos + v * LANES + i, against every key they can see.
// qt: [head_dim][QV] vectors, pre-scaled (lanes past rows: zeros); keys, values:
// [keys][head_dim] float32 rows, zeros past the context up to a multiple of KEYS;
// out: [head_dim][QV] vectors.
static void attend_block(const vq *qt, int64_t rows, int64_t first_pos, const float *keys,
                         const float *values, int64_t head_dim, int64_t window, float softcap,
                         vq *out) {
    vqi pos[QV], lowest[QV];  // each query's position, and the first key it sees
    vq row_max[QV], row_sum[QV];
    for (int v = 0; v < QV; v++) {
        for (int i = 0; i < LANES; i++) {
            pos[v][i] = (int32_t)(first_pos + v * LANES + i);
            lowest[v][i] = (int32_t)first_key(first_pos + v * LANES + i, window);
        }
        // A finite start: a step that a lane cannot see then leaves it as it was (max
        // unchanged, correction exp(0) = 1), where -inf - -inf would give NaN.
        row_max[v] = splat(-FLT_MAX);
        row_sum[v] = (vq){0};
    }
    for (int64_t d = 0; d < head_dim * QV; d++) out[d] = (vq){0};
    const int64_t last_pos = first_pos + rows - 1;
    for (int64_t k0 = first_key(first_pos, window) / KEYS * KEYS; k0 <= last_pos; k0 += KEYS) {
        const float *k = keys + k0 * head_dim;
        vq s[KEYS][QV];  // s[j][v] lane i: the score of query (v, i) against key k0 + j
        for (int j = 0; j < KEYS; j++)
            for (int v = 0; v < QV; v++) s[j][v] = (vq){0};
        for (int64_t d = 0; d < head_dim; d++)
            for (int j = 0; j < KEYS; j++) {
                const vq key = splat(k[j * head_dim + d]);  // one broadcast for QV vectors
                for (int v = 0; v < QV; v++)
                    s[j][v] = multiply_add_lanes(s[j][v], qt[d * QV + v], key);
            }
        if (softcap > 0.0f)
            for (int j = 0; j < KEYS; j++)
                for (int v = 0; v < QV; v++)
                    for (int i = 0; i < LANES; i++)
                        s[j][v][i] = softcap * tanhf(s[j][v][i] / softcap);
        vq weights[KEYS][QV], correction[QV];
        for (int v = 0; v < QV; v++) {
            vqi seen[KEYS];  // lanes that see key k0 + j
            vq step_max = splat(-INFINITY);
            for (int j = 0; j < KEYS; j++) {
                const int32_t key = (int32_t)(k0 + j);
                seen[j] = (key <= pos[v]) & (key >= lowest[v]);
                const vq masked = select_lanes(seen[j], s[j][v], splat(-INFINITY));
                step_max = select_lanes(masked > step_max, masked, step_max);
            }
            const vq new_max = select_lanes(step_max > row_max[v], step_max, row_max[v]);
            correction[v] = exp_lanes(row_max[v] - new_max);
            vq step_sum = {0};
            for (int j = 0; j < KEYS; j++) {
                weights[j][v] = (vq)((vqi)exp_lanes(s[j][v] - new_max) & seen[j]);
                step_sum += weights[j][v];
            }
            row_max[v] = new_max;
            row_sum[v] = row_sum[v] * correction[v] + step_sum;
        }
        const float *val = values + k0 * head_dim;
        // E elements at a time: E * QV independent chains of multiply-adds.
        for (int64_t d = 0; d < head_dim; d += E) {
            vq o[E][QV];
            for (int e = 0; e < E; e++)
                for (int v = 0; v < QV; v++) o[e][v] = out[(d + e) * QV + v] * correction[v];
            for (int j = 0; j < KEYS; j++)
                for (int e = 0; e < E; e++) {
                    const vq value = splat(val[j * head_dim + d + e]);
                    for (int v = 0; v < QV; v++)
                        o[e][v] = multiply_add_lanes(o[e][v], weights[j][v], value);
                }
            for (int e = 0; e < E; e++)
                for (int v = 0; v < QV; v++) out[(d + e) * QV + v] = o[e][v];
        }
    }
    for (int v = 0; v < QV; v++) {
        const vq inverse = 1.0f / row_sum[v];
        for (int64_t d = 0; d < head_dim; d++) out[d * QV + v] *= inverse;
    }
}

// Returns 0, -1 for an unsupported head_dim, -2 when out of memory.
int paged_prefill_attention(const void *q, const void *k_cache, const void *v_cache,
                            const int64_t *block_table, void *out, int64_t num_new,
                            int64_t context_len, int64_t num_heads, int64_t num_kv_heads,
                            int64_t head_dim, int64_t block_size, int64_t num_blocks,
                            int64_t q_row_stride, float scale, int64_t window, float softcap,
                            int is_bf16, int cache_bf16, int num_threads) {
    if (head_dim > MAX_HEAD_DIM || head_dim % 4 != 0) return -1;  // values go E (2) at a time
    const int64_t group = num_heads / num_kv_heads;
    const int64_t padded = (context_len + KEYS - 1) / KEYS * KEYS;
    const int64_t per_head = padded * head_dim;  // floats per kv head
    // Zeroed, so that the rows past the context (and before the window) are finite.
    const size_t bytes = (size_t)(num_kv_heads * per_head) * sizeof(float);
    float *keys = calloc(1, bytes), *values = calloc(1, bytes);
    if (keys == NULL || values == NULL) {
        free(keys);
        free(values);
        return -2;
    }
    const int64_t first_pos = context_len - num_new;  // position of the first new token
    const int64_t q_blocks = (num_new + BLOCK - 1) / BLOCK;
    const int64_t first = first_key(first_pos, window);  // the first key any query sees
    const int64_t seen = context_len - first;

#pragma omp parallel num_threads(num_threads)
    {
        // Copy the context out of the cache, as float32 rows.
#pragma omp for schedule(static)
        for (int64_t task = 0; task < num_kv_heads * seen; task++) {
            const int64_t h = task / seen, t = first + task % seen;
            const int64_t slot = (h * num_blocks + block_table[t / block_size]) * block_size +
                                 t % block_size;
            float *k_row = keys + h * per_head + t * head_dim;
            float *v_row = values + h * per_head + t * head_dim;
            for (int64_t d = 0; d < head_dim; d++) {
                k_row[d] = load_elem(k_cache, slot * head_dim + d, cache_bf16);
                v_row[d] = load_elem(v_cache, slot * head_dim + d, cache_bf16);
            }
        }
        // (the implicit barrier of the loop above: every row is ready)
        vq qt[MAX_HEAD_DIM * QV], result[MAX_HEAD_DIM * QV];
#pragma omp for schedule(dynamic, 1)
        for (int64_t task = 0; task < num_heads * q_blocks; task++) {
            // Later query blocks see more keys: hand them out first for a better balance.
            const int64_t head = task % num_heads, qb = q_blocks - 1 - task / num_heads;
            const int64_t row0 = qb * BLOCK;
            const int64_t rows = num_new - row0 < BLOCK ? num_new - row0 : BLOCK;
            for (int64_t d = 0; d < head_dim * QV; d++) qt[d] = (vq){0};
            for (int64_t i = 0; i < rows; i++) {
                const int64_t offset = (row0 + i) * q_row_stride + head * head_dim;
                for (int64_t d = 0; d < head_dim; d++)
                    qt[d * QV + i / LANES][i % LANES] = load_elem(q, offset + d, is_bf16) * scale;
            }
            const int64_t kv_head = head / group;
            attend_block(qt, rows, first_pos + row0, keys + kv_head * per_head,
                         values + kv_head * per_head, head_dim, window, softcap, result);
            for (int64_t i = 0; i < rows; i++) {
                const int64_t offset = ((row0 + i) * num_heads + head) * head_dim;
                for (int64_t d = 0; d < head_dim; d++)
                    store_elem(out, offset + d, result[d * QV + i / LANES][i % LANES], is_bf16);
            }
        }
    }
    free(keys);
    free(values);
    return 0;
}
