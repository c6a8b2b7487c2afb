// Activations quantized to 8 bits per group of 32 inputs, GGUF's Q8 scheme, for the kernels
// that multiply them by quantized weights in integers (int4_linear.c).
//
// Each row's group is quantized on its own: step = max|x| / 127 and a = round(x * (127 /
// max|x|)) in -127..127, rounding half to even. A row's levels read nothing but that row. The
// AVX2 path computes exactly the portable one's values: the same multiply, the same rounding,
// and max and integer sums do not depend on their order.
#pragma once

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef __AVX2__
#include <immintrin.h>
#endif

#include "bf16.h"

enum { Q8_GROUP = 32 };

// A batch of quantized rows: levels [rows][groups * 32], steps and step_sums [rows][groups].
typedef struct {
    int8_t *levels;
    float *steps;      // max|x| / 127 (NaN where the group holds inf or NaN)
    float *step_sums;  // step * sum(levels), the factor of an asymmetric weight's minimum
} Quantized;

// Levels of one group v[32] into a, its step and step * sum(levels).
static inline void q8_group(const float *v, int8_t *a, float *step, float *step_sum) {
#ifdef __AVX2__
    const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 infinity = _mm256_set1_ps(INFINITY);
    __m256 x[4], amax8 = _mm256_setzero_ps();
    int finite = 0xff;
    for (int j = 0; j < 4; j++) {
        x[j] = _mm256_loadu_ps(v + 8 * j);
        const __m256 abs = _mm256_and_ps(x[j], magnitude);
        finite &= _mm256_movemask_ps(_mm256_cmp_ps(abs, infinity, _CMP_LT_OQ));
        amax8 = _mm256_max_ps(amax8, abs);
    }
    float lanes[8], amax = 0.0f;
    _mm256_storeu_ps(lanes, amax8);
    for (int l = 0; l < 8; l++) amax = fmaxf(amax, lanes[l]);
    if (finite != 0xff || amax == 0.0f) {
        memset(a, 0, Q8_GROUP);
        *step = *step_sum = finite == 0xff ? 0.0f : NAN;
        return;
    }
    const __m256 inverse = _mm256_set1_ps(127.0f / amax);
    __m256i q[4], total = _mm256_setzero_si256();
    for (int j = 0; j < 4; j++) {
        const __m256 scaled = _mm256_mul_ps(x[j], inverse);
        q[j] = _mm256_cvttps_epi32(
            _mm256_round_ps(scaled, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        total = _mm256_add_epi32(total, q[j]);
    }
    // Packing interleaves 128-bit lanes: bytes come out as groups of 4 in the order 0 2 4 6 1 3
    // 5 7 (in units of 4 inputs); the permutation puts them back.
    const __m256i packed = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]),
                                              _mm256_packs_epi32(q[2], q[3]));
    _mm256_storeu_si256((__m256i *)a, _mm256_permutevar8x32_epi32(
                                          packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
    int32_t sums[8];
    _mm256_storeu_si256((__m256i *)sums, total);
    const int sum = sums[0] + sums[1] + sums[2] + sums[3] + sums[4] + sums[5] + sums[6] + sums[7];
#else
    float amax = 0.0f;
    int finite = 1;
    for (int k = 0; k < Q8_GROUP; k++) {
        amax = fmaxf(amax, fabsf(v[k]));
        finite &= isfinite(v[k]);
    }
    if (!finite || amax == 0.0f) {  // inf or NaN poisons the outputs; zero is zero
        memset(a, 0, Q8_GROUP);
        *step = *step_sum = finite ? 0.0f : NAN;
        return;
    }
    const float inverse = 127.0f / amax;
    int sum = 0;
    for (int k = 0; k < Q8_GROUP; k++) {
        a[k] = (int8_t)nearbyintf(v[k] * inverse);
        sum += a[k];
    }
#endif
    *step = amax / 127.0f;
    *step_sum = *step * (float)sum;
}

// Row r of x (rows x_stride elements apart, bfloat16 when is_bf16) into row r of X.
static inline void q8_row(const void *x, int64_t x_stride, int64_t r, int64_t groups,
                          int is_bf16, const Quantized *X) {
    for (int64_t g = 0; g < groups; g++) {
        float v[Q8_GROUP];
        const int64_t at = r * x_stride + g * Q8_GROUP;
        if (is_bf16)
            for (int k = 0; k < Q8_GROUP; k++) v[k] = bf16_to_float(((const uint16_t *)x)[at + k]);
        else
            memcpy(v, (const float *)x + at, sizeof v);
        const int64_t rg = r * groups + g;
        q8_group(v, X->levels + rg * Q8_GROUP, X->steps + rg, X->step_sums + rg);
    }
}

// Room for `rows` rows of `groups` groups; 0 if an allocation failed (then nothing is held).
static inline int q8_allocate(Quantized *X, int64_t rows, int64_t groups) {
    X->levels = malloc((size_t)(rows * groups * Q8_GROUP));
    X->steps = malloc((size_t)(rows * groups) * sizeof(float));
    X->step_sums = malloc((size_t)(rows * groups) * sizeof(float));
    if (X->levels != NULL && X->steps != NULL && X->step_sums != NULL) return 1;
    free(X->levels), free(X->steps), free(X->step_sums);
    return 0;
}

static inline void q8_free(Quantized *X) { free(X->levels), free(X->steps), free(X->step_sums); }
