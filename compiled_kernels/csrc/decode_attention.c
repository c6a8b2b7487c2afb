// Paged decode attention on the CPU: one new query token per sequence against its cached keys
// and values, read in place from the block-structured KV cache (no gathered copy).
//
// A sequence's context is cut into parts of PART keys at fixed positions (0, PART, 2 PART, ...),
// and each (sequence, kv head, part) is one independent task: the query heads that share the
// kv head take float32 scores of the part's keys, the part's max, the exponentials' sum and
// their float32 weighted sum of its values. A second pass merges each head's parts in order,
// rescaling each by exp(its max - the overall max). A long context so gives both threads work
// even for one sequence, and a part's values stay in L2 while each tile of query heads reads
// them. Where the parts fall depends only on the sequence's own context length, and every sum
// runs in a fixed order, so a sequence gets bitwise the same result alone or in any batch; one
// part is an exact two-pass softmax (its rescale factor is exactly 1).
//
// Layouts (row-major):
//   q:            [num_seqs, num_heads, head_dim], rows q_row_stride elements apart
//   k/v cache:    [num_kv_heads, num_blocks, block_size, head_dim]
//   block_tables: [num_seqs, max_blocks] int64
//   context_lens: [num_seqs] int64, tokens to attend to (the new one included)
//   out:          [num_seqs, num_heads, head_dim], contiguous
// q and out are bfloat16 when is_bf16 is set, else float32; the cache is when cache_bf16 is.
//
// window > 0 (a sliding-window layer): only the last `window` tokens of the context are seen,
// and the blocks before them are never read (they may have been freed). softcap > 0 (Gemma 2):
// scores are capped to softcap * tanh(score / softcap) before the softmax.

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef __AVX__
#include <immintrin.h>
#endif

#include "bf16.h"
#include "kernels.h"
#include "lanes.h"
#include "vec.h"
#include "window.h"

#define MAX_HEAD_DIM 256
#define MAX_GROUP 32
#define KEYS 8  // keys scored together: one vector of 8 scores
#define PART 256  // keys per part: its values, 64 KB of float32 at head_dim 64, fit in L2
#define CHUNK 16  // dimensions read at once: 32 bytes of bfloat16
#define MAX_CHUNKS (MAX_HEAD_DIM / CHUNK)
#define TILE 3  // query heads worked on together, their accumulators in registers

// 16 elements of a row as two float vectors. A bfloat16 row gives its even elements (shifted
// up) and its odd ones (masked): one load and two integer operations, and no widening shuffle;
// a float32 row gives its first and second 8. Queries and outputs are kept in the same halves
// (see query_halves), so a dot product or a weighted sum never needs them in order.
typedef struct {
    vf lo, hi;
} halves;

static inline halves load_halves(const void *base, int64_t offset, int cache_bf16) {
    halves h;
    if (cache_bf16) {
        vu x;
        memcpy(&x, (const uint16_t *)base + offset, sizeof x);
        h.lo = (vf)(x << 16), h.hi = (vf)(x & 0xffff0000u);
    } else {
        memcpy(&h.lo, (const float *)base + offset, sizeof h.lo);
        memcpy(&h.hi, (const float *)base + offset + 8, sizeof h.hi);
    }
    return h;
}

// Element i (0-15) of a chunk: where load_halves puts it, as (half, lane).
static inline int half_of(int i, int cache_bf16) { return cache_bf16 ? i % 2 : i / 8; }
static inline int lane_of(int i, int cache_bf16) { return cache_bf16 ? i / 2 : i % 8; }

// A query row (float32, head_dim % CHUNK == 0) as its chunks' halves.
static void query_halves(const float *q, int64_t head_dim, int cache_bf16, halves *out) {
    for (int64_t c = 0; c < head_dim / CHUNK; c++)
        for (int i = 0; i < CHUNK; i++) {
            vf *half = half_of(i, cache_bf16) ? &out[c].hi : &out[c].lo;
            (*half)[lane_of(i, cache_bf16)] = q[c * CHUNK + i];
        }
}

// The 8 lanes of v summed as ((0 + 1) + (2 + 3)) + ((4 + 5) + (6 + 7)).
static inline float sum_lanes(vf v) {
    return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
}

// Lane j of the result: sum_lanes(acc[j]), the order AVX's pairwise adds give, so every build
// adds the same way.
static inline vf sum_lanes_of_each(const vf acc[KEYS]) {
#ifdef __AVX__
    const __m256 h01 = _mm256_hadd_ps((__m256)acc[0], (__m256)acc[1]);
    const __m256 h23 = _mm256_hadd_ps((__m256)acc[2], (__m256)acc[3]);
    const __m256 h45 = _mm256_hadd_ps((__m256)acc[4], (__m256)acc[5]);
    const __m256 h67 = _mm256_hadd_ps((__m256)acc[6], (__m256)acc[7]);
    const __m256 q0 = _mm256_hadd_ps(h01, h23);  // [key 0-3 lanes 0-3 | key 0-3 lanes 4-7]
    const __m256 q1 = _mm256_hadd_ps(h45, h67);  // the same for keys 4-7
    return (vf)_mm256_add_ps(_mm256_permute2f128_ps(q0, q1, 0x20),
                             _mm256_permute2f128_ps(q0, q1, 0x31));
#else
    vf out;
    for (int j = 0; j < KEYS; j++) out[j] = sum_lanes(acc[j]);
    return out;
#endif
}

// The element offsets of a part's key (and value) rows: rows[i] for key first + i, walked block
// by block once for both passes.
static void part_rows(const int64_t *table, int64_t head_base, int64_t block_size,
                      int64_t head_dim, int64_t first, int64_t context_len, int64_t *rows) {
    int64_t block = first / block_size, in_block = first % block_size;
    for (int64_t t = first; t < context_len; t++) {
        rows[t - first] = ((head_base + table[block]) * block_size + in_block) * head_dim;
        if (++in_block == block_size) block++, in_block = 0;
    }
}

// For h < H query heads (H a constant once inlined): products[h * KEYS] and [h * KEYS + 1] =
// the lane-wise products of key rows a and b with head h's query, summed over the chunks (the
// dot products before their horizontal sums). Two keys share each load of the query, and
// each chunk of a key is read once for all H heads.
static inline __attribute__((always_inline)) void dot_two_keys(const halves *q, int H,
                                                               const void *k_cache,
                                                               int64_t row_a, int64_t row_b,
                                                               int64_t chunks, int cache_bf16,
                                                               vf *products) {
    vf a[TILE] = {0}, b[TILE] = {0};
    for (int64_t c = 0; c < chunks; c++) {
        const halves ka = load_halves(k_cache, row_a + c * CHUNK, cache_bf16);
        const halves kb = load_halves(k_cache, row_b + c * CHUNK, cache_bf16);
        for (int h = 0; h < H; h++) {
            const halves qc = q[h * MAX_CHUNKS + c];
            a[h] = multiply_add(multiply_add(a[h], qc.lo, ka.lo), qc.hi, ka.hi);
            b[h] = multiply_add(multiply_add(b[h], qc.lo, kb.lo), qc.hi, kb.hi);
        }
    }
    for (int h = 0; h < H; h++) products[h * KEYS] = a[h], products[h * KEYS + 1] = b[h];
}

// Query heads [g0, g0 + H) of the part's tile: H is 1 to TILE, passed on as a constant.
#define FOR_TILE_SIZE(H, call)          \
    do {                                \
        if ((H) == 1) call(1);          \
        else if ((H) == 2) call(2);     \
        else call(3);                   \
    } while (0)

// A group of query heads cut into the fewest tiles of at most TILE heads, as even as they go
// (4 heads: 2 and 2, not 3 and 1): returns the number of tiles, heads[i] those of tile i.
static int64_t cut_into_tiles(int64_t group, int64_t heads[MAX_GROUP]) {
    const int64_t tiles = (group + TILE - 1) / TILE;
    for (int64_t i = 0; i < tiles; i++) heads[i] = group / tiles + (i < group % tiles);
    return tiles;
}

// scores[g * PART + i] for the part's `seen` keys (rows): each head's query (head_dim % CHUNK
// == 0) against them, 8 keys at a time, scaled.
static inline __attribute__((always_inline)) void score_keys(
    const halves *qh, const void *k_cache, const void *v_cache, const int64_t *rows,
    int64_t seen, int64_t block_size, int64_t head_dim, int64_t group, float scale,
    int cache_bf16, float *scores) {
    const int64_t chunks = head_dim / CHUNK, row_bytes = head_dim * (cache_bf16 ? 2 : 4);
    int64_t heads[MAX_GROUP];
    const int64_t tiles = cut_into_tiles(group, heads);
    vf products[MAX_GROUP * KEYS];  // [group, key]
    for (int64_t t = 0; t < seen; t += KEYS) {
        const int n = seen - t < KEYS ? (int)(seen - t) : KEYS;
        for (int j = 0; j < n; j += 2) {
            // A block's keys (or values) are a page or so, and the hardware prefetcher stops
            // at a page's end: as a key is scored, the key and value a block ahead are asked
            // for, so the next block's are on their way, spread over this block's.
            for (int k = j; k < j + 2 && t + k + block_size < seen; k++)
                for (int64_t byte = 0; byte < row_bytes; byte += 64) {
                    const int64_t ahead = rows[t + k + block_size] * (cache_bf16 ? 2 : 4);
                    __builtin_prefetch((const char *)k_cache + ahead + byte);
                    __builtin_prefetch((const char *)v_cache + ahead + byte);
                }
            const int64_t row_a = rows[t + j], row_b = j + 1 < n ? rows[t + j + 1] : row_a;
            for (int64_t i = 0, g0 = 0; i < tiles; g0 += heads[i++]) {
#define DOT_TWO_KEYS(H) dot_two_keys(qh + g0 * MAX_CHUNKS, H, k_cache, row_a, row_b, chunks, \
                                     cache_bf16, products + g0 * KEYS + j)
                FOR_TILE_SIZE(heads[i], DOT_TWO_KEYS);
#undef DOT_TWO_KEYS
            }
        }
        for (int64_t g = 0; g < group; g++) {
            for (int j = n; j < KEYS; j++) products[g * KEYS + j] = (vf){0};  // past the part
            const vf dots = sum_lanes_of_each(products + g * KEYS) * scale;
            if (n == KEYS) memcpy(scores + g * PART + t, &dots, sizeof dots);
            else for (int j = 0; j < n; j++) scores[g * PART + t + j] = dots[j];
        }
    }
}

// acc[h * MAX_CHUNKS + c] = sum over the part's keys i of p[h * PART + i] * value row i's
// chunk c, for h < H query heads (a constant once inlined): each chunk of a value read once for
// the H heads, their 2 * H accumulators in registers while the keys go by in order.
static inline __attribute__((always_inline)) void weigh_values(const void *v_cache,
                                                               const int64_t *rows,
                                                               int64_t seen, const float *p,
                                                               int H, int64_t c, int cache_bf16,
                                                               halves *acc) {
    halves sum[TILE];
    for (int h = 0; h < H; h++) sum[h] = (halves){{0}, {0}};
    for (int64_t i = 0; i < seen; i++) {
        const halves value = load_halves(v_cache, rows[i] + c * CHUNK, cache_bf16);
        for (int h = 0; h < H; h++) {
            const float w = p[h * PART + i];
            const vf weight = {w, w, w, w, w, w, w, w};
            sum[h].lo = multiply_add(sum[h].lo, weight, value.lo);
            sum[h].hi = multiply_add(sum[h].hi, weight, value.hi);
        }
    }
    for (int h = 0; h < H; h++) acc[h * MAX_CHUNKS + c] = sum[h];
}

// Each head's scores of `seen` keys replaced by exp(score - max) in place; returns the max and
// the exponentials' sum, added 8 lanes at a time in a fixed order (the last lanes masked).
static void softmax_part(float *s, int64_t seen, float *max_out, float *sum_out) {
    float max = -INFINITY;
#pragma omp simd reduction(max : max)
    for (int64_t t = 0; t < seen; t++) max = s[t] > max ? s[t] : max;
    vf sum = {0};
    for (int64_t t = 0; t < seen; t += 8) {
        vf x;
        memcpy(&x, s + t, sizeof x);  // the buffer is PART long; lanes past seen are dropped
        const vi lane = {0, 1, 2, 3, 4, 5, 6, 7};
        const vi valid = lane < (vi){0} + (int32_t)(seen - t);
        const vf e = (vf)((vi)exp_lanes(x - max) & valid);
        memcpy(s + t, &e, sizeof e);
        sum += e;
    }
    *max_out = max, *sum_out = sum_lanes(sum);
}

// partial[g * stride + d] = sum over the part's keys i of p[g * PART + i] * value row i's
// element d, for every head g (head_dim % CHUNK == 0): the tiles' weighted sums, one chunk at a
// time, then put back in element order.
static inline __attribute__((always_inline)) void weigh_all_values(
    const void *v_cache, const int64_t *rows, int64_t seen, const float *p, int64_t group,
    int64_t head_dim, int cache_bf16, float *partial, int64_t stride) {
    halves acc[MAX_GROUP * MAX_CHUNKS];
    int64_t heads[MAX_GROUP];
    const int64_t tiles = cut_into_tiles(group, heads), chunks = head_dim / CHUNK;
    for (int64_t i = 0, g0 = 0; i < tiles; g0 += heads[i++])
        for (int64_t c = 0; c < chunks; c++) {
#define WEIGH_VALUES(H) weigh_values(v_cache, rows, seen, p + g0 * PART, H, c, cache_bf16, \
                                     acc + g0 * MAX_CHUNKS)
            FOR_TILE_SIZE(heads[i], WEIGH_VALUES);
#undef WEIGH_VALUES
        }
    for (int64_t g = 0; g < group; g++)
        for (int64_t c = 0; c < chunks; c++)
            for (int i = 0; i < CHUNK; i++) {
                const halves *a = &acc[g * MAX_CHUNKS + c];
                const vf half = half_of(i, cache_bf16) ? a->hi : a->lo;
                partial[g * stride + c * CHUNK + i] = half[lane_of(i, cache_bf16)];
            }
}

// score_keys and weigh_all_values for a head_dim that is not a multiple of CHUNK, one element
// at a time.
static void score_keys_scalar(const float *qf, const void *k_cache, const int64_t *rows,
                              int64_t seen, int64_t head_dim, int64_t group, float scale,
                              int cache_bf16, float *scores) {
    for (int64_t i = 0; i < seen; i++)
        for (int64_t g = 0; g < group; g++) {
            float dot = 0.0f;
            for (int64_t d = 0; d < head_dim; d++)
                dot += qf[g * MAX_HEAD_DIM + d] * load_elem(k_cache, rows[i] + d, cache_bf16);
            scores[g * PART + i] = dot * scale;
        }
}

static void weigh_all_values_scalar(const void *v_cache, const int64_t *rows, int64_t seen,
                                    const float *p, int64_t group, int64_t head_dim,
                                    int cache_bf16, float *partial, int64_t stride) {
    for (int64_t g = 0; g < group; g++) {
        float *dst = partial + g * stride;
        memset(dst, 0, head_dim * sizeof(float));
        for (int64_t i = 0; i < seen; i++)
            for (int64_t d = 0; d < head_dim; d++)
                dst[d] += p[g * PART + i] * load_elem(v_cache, rows[i] + d, cache_bf16);
    }
}

// The query heads of kv_head in sequence seq against keys [first, context_len) of its
// context (one part). partial: [group][head_dim + 2], for each head the weighted sum of the
// values by exp(score - max), then that max and the sum of the exponentials.
static inline __attribute__((always_inline)) void attend_part_as(
    const void *q, const void *k_cache, const void *v_cache, const int64_t *table,
    int64_t first, int64_t context_len, float softcap, int64_t seq, int64_t kv_head,
    int64_t group, int64_t head_dim, int64_t block_size, int64_t num_blocks,
    int64_t q_row_stride, float scale, int is_bf16, int cache_bf16, float *partial) {
    float scores[MAX_GROUP * PART];  // [group, key of the part]
    float qf[MAX_GROUP * MAX_HEAD_DIM];
    halves qh[MAX_GROUP * MAX_CHUNKS];
    int64_t rows[PART];
    const int64_t first_head = kv_head * group, seen = context_len - first;
    const int64_t stride = head_dim + 2;
    const int fast = head_dim % CHUNK == 0;
    part_rows(table, kv_head * num_blocks, block_size, head_dim, first, context_len, rows);
    for (int64_t g = 0; g < group; g++) {
        for (int64_t d = 0; d < head_dim; d++)
            qf[g * MAX_HEAD_DIM + d] =
                load_elem(q, seq * q_row_stride + (first_head + g) * head_dim + d, is_bf16);
        if (fast) query_halves(qf + g * MAX_HEAD_DIM, head_dim, cache_bf16, qh + g * MAX_CHUNKS);
    }

    if (fast)
        score_keys(qh, k_cache, v_cache, rows, seen, block_size, head_dim, group, scale,
                   cache_bf16, scores);
    else
        score_keys_scalar(qf, k_cache, rows, seen, head_dim, group, scale, cache_bf16, scores);
    for (int64_t g = 0; g < group; g++) {
        float *s = scores + g * PART, *stats = partial + g * stride + head_dim;
        if (softcap > 0.0f)
            for (int64_t i = 0; i < seen; i++) s[i] = softcap * tanhf(s[i] / softcap);
        softmax_part(s, seen, &stats[0], &stats[1]);
    }
    if (fast)
        weigh_all_values(v_cache, rows, seen, scores, group, head_dim, cache_bf16, partial,
                         stride);
    else
        weigh_all_values_scalar(v_cache, rows, seen, scores, group, head_dim, cache_bf16,
                                partial, stride);
}

// attend_part_as compiled once for each cache element type, so that its inner loops are
// specialised.
static void attend_part(const void *q, const void *k_cache, const void *v_cache,
                        const int64_t *table, int64_t first, int64_t context_len, float softcap,
                        int64_t seq, int64_t kv_head, int64_t group, int64_t head_dim,
                        int64_t block_size, int64_t num_blocks, int64_t q_row_stride,
                        float scale, int is_bf16, int cache_bf16, float *partial) {
    if (cache_bf16)
        attend_part_as(q, k_cache, v_cache, table, first, context_len, softcap, seq, kv_head,
                       group, head_dim, block_size, num_blocks, q_row_stride, scale, is_bf16, 1,
                       partial);
    else
        attend_part_as(q, k_cache, v_cache, table, first, context_len, softcap, seq, kv_head,
                       group, head_dim, block_size, num_blocks, q_row_stride, scale, is_bf16, 0,
                       partial);
}

// One query head's output from its parts' partials (parts of them, each head_dim + 2 floats,
// `stride` apart), merged in order.
static void merge_parts(const float *partials, int64_t parts, int64_t stride, int64_t head_dim,
                        int is_bf16, void *out, int64_t offset) {
    float max = -INFINITY;
    for (int64_t k = 0; k < parts; k++) {
        const float m = partials[k * stride + head_dim];
        max = m > max ? m : max;
    }
    float acc[MAX_HEAD_DIM] = {0}, sum = 0.0f;
    for (int64_t k = 0; k < parts; k++) {
        const float *part = partials + k * stride;
        const float factor = exp_approx(part[head_dim] - max);  // exactly 1 for a lone part
        sum += part[head_dim + 1] * factor;
        for (int64_t d = 0; d < head_dim; d++) acc[d] += part[d] * factor;
    }
    const float inv_sum = 1.0f / sum;
    for (int64_t d = 0; d < head_dim; d++) store_elem(out, offset + d, acc[d] * inv_sum, is_bf16);
}

// Returns 0, or -1 when a shape is outside what the kernel supports (the caller checks first)
// or memory runs out.
int paged_decode_attention(const void *q, const void *k_cache, const void *v_cache,
                           const int64_t *block_tables, const int64_t *context_lens, void *out,
                           int64_t num_seqs, int64_t num_heads, int64_t num_kv_heads,
                           int64_t head_dim, int64_t block_size, int64_t num_blocks,
                           int64_t max_blocks, int64_t q_row_stride, float scale,
                           int64_t window, float softcap, int is_bf16, int cache_bf16,
                           int num_threads) {
    const int64_t group = num_heads / num_kv_heads;
    if (head_dim > MAX_HEAD_DIM || group > MAX_GROUP) return -1;
    // Sequence s sees keys [first[s], context_lens[s]), which fall in parts[s] parts of PART
    // keys from part first[s] / PART on; its tasks (kv head h, part k) are tasks
    // from[s] + h * parts[s] + k, each with a partial of group * (head_dim + 2) floats.
    int64_t *first = malloc((size_t)(3 * num_seqs + 1) * sizeof(int64_t));
    if (first == NULL) return -1;
    int64_t *parts = first + num_seqs, *from = parts + num_seqs;
    from[0] = 0;
    for (int64_t s = 0; s < num_seqs; s++) {
        const int64_t ctx = context_lens[s];
        first[s] = first_key(ctx - 1, window);  // the new token is at position ctx - 1
        parts[s] = ctx > 0 ? (ctx - 1) / PART - first[s] / PART + 1 : 0;
        from[s + 1] = from[s] + num_kv_heads * parts[s];
    }
    const int64_t tasks = from[num_seqs], stride = head_dim + 2;
    float *partials = malloc((size_t)(tasks * group * stride + 1) * sizeof(float));
    if (partials == NULL) {
        free(first);
        return -1;
    }
#pragma omp parallel num_threads(num_threads)
    {
        // Guided: a preempted thread's remaining tasks go to the others (see int4_linear.c).
#pragma omp for schedule(guided)
        for (int64_t task = 0; task < tasks; task++) {
            // Its sequence: the s with from[s] <= task < from[s + 1].
            int64_t s = 0, above = num_seqs - 1;
            while (s < above) {
                const int64_t mid = (s + above) / 2;
                if (from[mid + 1] > task) above = mid;
                else s = mid + 1;
            }
            const int64_t h = (task - from[s]) / parts[s], k = (task - from[s]) % parts[s];
            const int64_t start = (first[s] / PART + k) * PART;
            const int64_t end = start + PART < context_lens[s] ? start + PART : context_lens[s];
            attend_part(q, k_cache, v_cache, block_tables + s * max_blocks,
                        start > first[s] ? start : first[s], end, softcap, s, h, group,
                        head_dim, block_size, num_blocks, q_row_stride, scale, is_bf16,
                        cache_bf16, partials + task * group * stride);
        }
        // (the loop's barrier: every partial is ready)
#pragma omp for collapse(2) schedule(static)
        for (int64_t s2 = 0; s2 < num_seqs; s2++)
            for (int64_t head = 0; head < num_heads; head++) {
                const int64_t h = head / group, g = head % group;
                merge_parts(partials + ((from[s2] + h * parts[s2]) * group + g) * stride,
                            parts[s2], group * stride, head_dim, is_bf16, out,
                            (s2 * num_heads + head) * head_dim);
            }
    }
    free(partials);
    free(first);
    return 0;
}
