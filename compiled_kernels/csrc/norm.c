// RMSNorm, optionally fused with the residual add, one row per loop iteration.
// Mirrors compiled_kernels/norm.py: statistics in float32, the normalised row rounded to the
// element type, then multiplied by the weight (and rounded again), as the HF reference does.
//
// x, residual, out, residual_out: [rows, hidden], rows x_stride / contiguous; weight: [hidden].
// Elements are bfloat16 when is_bf16 is set, else float32.

#include <math.h>

#include "bf16.h"
#include "kernels.h"

static void norm_row(const float *row, const void *weight, void *out, int64_t hidden, float eps,
                     int is_bf16) {
    float sum_sq = 0.0f;
#pragma omp simd reduction(+ : sum_sq)
    for (int64_t i = 0; i < hidden; i++) sum_sq += row[i] * row[i];
    const float inv = 1.0f / sqrtf(sum_sq / (float)hidden + eps);
    for (int64_t i = 0; i < hidden; i++) {
        float normed = round_to(row[i] * inv, is_bf16);
        store_elem(out, i, load_elem(weight, i, is_bf16) * normed, is_bf16);
    }
}

// out = rms_norm(x); with residual: residual_out = x + residual, out = rms_norm(residual_out).
void rms_norm(const void *x, int64_t x_stride, const void *residual, void *residual_out,
              const void *weight, void *out, int64_t rows, int64_t hidden, float eps, int is_bf16,
              int num_threads) {
    const int64_t elem = is_bf16 ? 2 : 4;
#pragma omp parallel for num_threads(num_threads) if (rows >= 64) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        float row[hidden];
        const char *x_row = (const char *)x + r * x_stride * elem;
        for (int64_t i = 0; i < hidden; i++) row[i] = load_elem(x_row, i, is_bf16);
        if (residual != NULL) {
            const char *res_row = (const char *)residual + r * hidden * elem;
            char *res_out_row = (char *)residual_out + r * hidden * elem;
            for (int64_t i = 0; i < hidden; i++) {
                row[i] = store_elem(res_out_row, i, row[i] + load_elem(res_row, i, is_bf16),
                                    is_bf16);
            }
        }
        norm_row(row, weight, (char *)out + r * hidden * elem, hidden, eps, is_bf16);
    }
}
