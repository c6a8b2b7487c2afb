// Rotary position embedding (HF "rotate half" layout) over the q and k heads of each token.
// Mirrors compiled_kernels/rotary.py, including its rounding: cos and sin arrive in the element
// type, and each product and sum is rounded as separate torch ops would round it.
//
// x:   [tokens, heads, head_dim], rows x_stride elements apart (heads are contiguous)
// cos, sin: [tokens, head_dim / 2], contiguous
// out: [tokens, heads, head_dim], contiguous

#include "bf16.h"
#include "kernels.h"

static inline float bf16_round(float v) { return bf16_to_float(float_to_bf16(v)); }

static void rotate_bf16(const uint16_t *x, const uint16_t *cos, const uint16_t *sin,
                        uint16_t *out, int64_t half) {
#pragma omp simd
    for (int64_t i = 0; i < half; i++) {
        const float c = bf16_to_float(cos[i]), s = bf16_to_float(sin[i]);
        const float x1 = bf16_to_float(x[i]), x2 = bf16_to_float(x[half + i]);
        out[i] = float_to_bf16(bf16_round(x1 * c) - bf16_round(x2 * s));
        out[half + i] = float_to_bf16(bf16_round(x2 * c) + bf16_round(x1 * s));
    }
}

static void rotate_f32(const float *x, const float *cos, const float *sin, float *out,
                       int64_t half) {
#pragma omp simd
    for (int64_t i = 0; i < half; i++) {
        out[i] = x[i] * cos[i] - x[half + i] * sin[i];
        out[half + i] = x[half + i] * cos[i] + x[i] * sin[i];
    }
}

void apply_rotary(const void *x, int64_t x_stride, const void *cos, const void *sin, void *out,
                  int64_t tokens, int64_t heads, int64_t head_dim, int is_bf16,
                  int num_threads) {
    const int64_t half = head_dim / 2;
#pragma omp parallel for num_threads(num_threads) if (tokens >= 64) schedule(static)
    for (int64_t t = 0; t < tokens; t++) {
        for (int64_t h = 0; h < heads; h++) {
            const int64_t in = t * x_stride + h * head_dim, dst = (t * heads + h) * head_dim;
            if (is_bf16) {
                rotate_bf16((const uint16_t *)x + in, (const uint16_t *)cos + t * half,
                            (const uint16_t *)sin + t * half, (uint16_t *)out + dst, half);
            } else {
                rotate_f32((const float *)x + in, (const float *)cos + t * half,
                           (const float *)sin + t * half, (float *)out + dst, half);
            }
        }
    }
}
