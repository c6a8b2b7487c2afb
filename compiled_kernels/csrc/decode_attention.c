// Paged decode attention on the CPU: one new query token per sequence against its cached keys
// and values, read in place from the block-structured KV cache (no gathered copy).
//
// A sequence's context is cut into parts of PART keys at fixed positions (0, PART, 2 PART, ...),
// and each (sequence, kv head, part) is one independent task: the query heads that share the
// kv head take float32 scores of the part's keys, the part's max, the exponentials' sum and
// their float32 weighted sum of its values. A second pass merges each head's parts in order,
// rescaling each by exp(its max - the overall max). A long context so gives both threads work
// even for one sequence, and a part's values stay in L2 while each query head reads them. Where
// the parts fall depends only on the sequence's own context length, and every sum runs in a
// fixed order, so a sequence gets bitwise the same result alone or in any batch; one part is
// an exact two-pass softmax (its rescale factor is exactly 1).
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
#include "exp.h"
#include "kernels.h"
#include "vec.h"
#include "window.h"

#define MAX_HEAD_DIM 256
#define MAX_GROUP 32
#define KEYS 8  // keys scored together: one vector of 8 scores
#define PART 256  // keys per part: its values, 64 KB of float32 at head_dim 64, fit in L2

static inline vf load_vf(const float *p) {
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}

// Lane j of the result: the 8 lanes of acc[j] summed as ((0 + 1) + (2 + 3)) + ((4 + 5) + (6 + 7)),
// the order AVX's pairwise adds give, so every build adds the same way.
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
    for (int j = 0; j < KEYS; j++) {
        const vf a = acc[j];
        out[j] = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
    }
    return out;
#endif
}

// q . rows[j] for 8 key rows at once (head_dim % 8 == 0): lane by lane multiply-adds, then one
// transposing sum for all 8 instead of a horizontal sum per key.
static inline vf dot_keys(const float *q, const float *const rows[KEYS], int64_t head_dim) {
    vf acc[KEYS];
    for (int j = 0; j < KEYS; j++) acc[j] = (vf){0};
    for (int64_t d = 0; d < head_dim; d += 8) {
        const vf qv = load_vf(q + d);
        for (int j = 0; j < KEYS; j++) acc[j] = multiply_add(acc[j], qv, load_vf(rows[j] + d));
    }
    return sum_lanes_of_each(acc);
}

// A row as float32: widened into dst when bfloat16, else read in place (no copy).
static inline const float *load_row(const void *base, int64_t offset, int64_t n, int is_bf16,
                                    float *dst) {
    if (!is_bf16) return (const float *)base + offset;
    const uint16_t *src = (const uint16_t *)base + offset;
#pragma omp simd
    for (int64_t i = 0; i < n; i++) dst[i] = bf16_to_float(src[i]);
    return dst;
}

// 8 elements of a row from offset, as float32.
static inline vf load8(const void *base, int64_t offset, int is_bf16) {
    if (!is_bf16) return load_vf((const float *)base + offset);
#ifdef __AVX2__
    const __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)base + offset));
    return (vf)_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
#else
    vf v;
    for (int k = 0; k < 8; k++) v[k] = bf16_to_float(((const uint16_t *)base)[offset + k]);
    return v;
#endif
}

// acc[0 .. 8n) += sum over keys t of p[t - first] * value row t [d0, d0 + 8n), keys in order.
static inline __attribute__((always_inline)) void weigh_values(
    const void *v_cache, const int64_t *table, int64_t head_base, int64_t block_size,
    int64_t head_dim, int64_t first, int64_t context_len, const float *p, int64_t d0, int n,
    int cache_bf16, float *acc) {
    vf sum[8];
    for (int k = 0; k < n; k++) sum[k] = load_vf(acc + 8 * k);
    int64_t block = first / block_size, in_block = first % block_size;
    for (int64_t t = first; t < context_len; t++) {
        const int64_t slot = (head_base + table[block]) * block_size + in_block;
        if (++in_block == block_size) block++, in_block = 0;
        const vf weight = {p[t - first], p[t - first], p[t - first], p[t - first],
                           p[t - first], p[t - first], p[t - first], p[t - first]};
        for (int k = 0; k < n; k++) {
            const vf value = load8(v_cache, slot * head_dim + d0 + 8 * k, cache_bf16);
            sum[k] = multiply_add(sum[k], weight, value);
        }
    }
    for (int k = 0; k < n; k++) memcpy(acc + 8 * k, &sum[k], sizeof sum[k]);
}

// The query heads of kv_head in sequence seq against keys [first, context_len) of its
// context (one part). partial: [group][head_dim + 2], for each head the weighted sum of the
// values by exp(score - max), then that max and the sum of the exponentials.
static void attend_part(const void *q, const void *k_cache, const void *v_cache,
                        const int64_t *table, int64_t first, int64_t context_len, float softcap,
                        int64_t seq, int64_t kv_head, int64_t group, int64_t head_dim,
                        int64_t block_size, int64_t num_blocks, int64_t q_row_stride,
                        float scale, int is_bf16, int cache_bf16, float *partial) {
    float scores[MAX_GROUP * PART];  // [group, seen]
    float qf[MAX_GROUP][MAX_HEAD_DIM];
    float buffer[MAX_HEAD_DIM];
    float acc[MAX_GROUP][MAX_HEAD_DIM];
    const int64_t first_head = kv_head * group;
    for (int64_t g = 0; g < group; g++) {
        const float *qrow =
            load_row(q, seq * q_row_stride + (first_head + g) * head_dim, head_dim, is_bf16, qf[g]);
        if (qrow != qf[g]) memcpy(qf[g], qrow, head_dim * sizeof(float));
    }
    const int64_t head_base = kv_head * num_blocks;
    const int64_t seen = context_len - first;  // keys of this part

    // Keys in runs of 8: slot of key t is (head_base + table[t / block_size]) * block_size + t %
    // block_size, walked block by block rather than divided per key.
    float key_rows[KEYS][MAX_HEAD_DIM];  // bfloat16 keys widened
    int64_t block = first / block_size, in_block = first % block_size;
    // A block's keys (or values) are a page or so, and the hardware prefetcher stops at a
    // page's end: each block's keys and values, and the next block's, are asked for as its
    // first keys are scored.
    const int64_t last_block = (context_len - 1) / block_size;
    const int64_t block_bytes = block_size * head_dim * (cache_bf16 ? 2 : 4);
    int64_t fetched = block - 1;  // blocks prefetched so far: up to this one
    for (int64_t t = first; t < context_len; t += KEYS) {
        const int n = context_len - t < KEYS ? (int)(context_len - t) : KEYS;
        for (; fetched <= block && fetched < last_block; fetched++) {
            const int64_t at = (head_base + table[fetched + 1]) * block_bytes;
            for (int64_t byte = 0; byte < block_bytes; byte += 64) {
                __builtin_prefetch((const char *)k_cache + at + byte);
                __builtin_prefetch((const char *)v_cache + at + byte);
            }
        }
        const float *rows[KEYS];
        for (int j = 0; j < n; j++) {
            const int64_t slot = (head_base + table[block]) * block_size + in_block;
            rows[j] = load_row(k_cache, slot * head_dim, head_dim, cache_bf16, key_rows[j]);
            if (++in_block == block_size) block++, in_block = 0;
        }
        for (int j = n; j < KEYS; j++) rows[j] = rows[0];  // past the context: computed, dropped
        for (int64_t g = 0; g < group; g++) {
            float dots[KEYS];
            if (head_dim % 8 == 0) {
                const vf v = dot_keys(qf[g], rows, head_dim);
                memcpy(dots, &v, sizeof dots);
            } else {
                for (int j = 0; j < n; j++) {
                    float dot = 0.0f;
                    for (int64_t d = 0; d < head_dim; d++) dot += qf[g][d] * rows[j][d];
                    dots[j] = dot;
                }
            }
            for (int j = 0; j < n; j++) {
                const float score = dots[j] * scale;
                scores[g * seen + t - first + j] =
                    softcap > 0.0f ? softcap * tanhf(score / softcap) : score;
            }
        }
    }

    float max_of[MAX_GROUP], sum_of[MAX_GROUP];
    for (int64_t g = 0; g < group; g++) {
        float *s = scores + g * seen;
        float max = -INFINITY;
#pragma omp simd reduction(max : max)
        for (int64_t t = 0; t < seen; t++) max = s[t] > max ? s[t] : max;
        // Summed in order (no simd reduction clause): the exponentials vectorise, the sum
        // keeps one order whatever the buffer's alignment, so a row's bits never depend on it.
        float sum = 0.0f;
        for (int64_t t = 0; t < seen; t++) {
            s[t] = exp_approx(s[t] - max);
            sum += s[t];
        }
        max_of[g] = max, sum_of[g] = sum;
        memset(acc[g], 0, head_dim * sizeof(float));
    }

    // Values: each head's weighted sum kept in registers, up to 64 dimensions at a time, while
    // the keys go by in order (each output element adds its terms in key order either way).
    for (int64_t g = 0; g < group; g++) {
        const float *p = scores + g * seen;
        int64_t d0 = 0;
        if (head_dim % 8 == 0) {
            for (; d0 + 64 <= head_dim; d0 += 64)
                weigh_values(v_cache, table, head_base, block_size, head_dim, first, context_len,
                             p, d0, 8, cache_bf16, acc[g] + d0);
            for (; d0 < head_dim; d0 += 8)
                weigh_values(v_cache, table, head_base, block_size, head_dim, first, context_len,
                             p, d0, 1, cache_bf16, acc[g] + d0);
        } else {
            block = first / block_size, in_block = first % block_size;
            for (int64_t t = first; t < context_len; t++) {
                const int64_t slot = (head_base + table[block]) * block_size + in_block;
                if (++in_block == block_size) block++, in_block = 0;
                const float *row =
                    load_row(v_cache, slot * head_dim, head_dim, cache_bf16, buffer);
                for (int64_t d = 0; d < head_dim; d++) acc[g][d] += p[t - first] * row[d];
            }
        }
    }

    for (int64_t g = 0; g < group; g++) {
        float *dst = partial + g * (head_dim + 2);
        memcpy(dst, acc[g], head_dim * sizeof(float));
        dst[head_dim] = max_of[g], dst[head_dim + 1] = sum_of[g];
    }
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
