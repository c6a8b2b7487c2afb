// SiLU-and-mul, the gated MLP activation: out = silu(gate) * up, with gate_up = [gate | up].
// Mirrors compiled_kernels/activation.py: silu's result is rounded to the element type before
// the product, as two torch ops would.
//
// gate_up: [rows, 2 * width], contiguous; out: [rows, width], contiguous.

#include "bf16.h"
#include "exp.h"
#include "kernels.h"

static inline float silu(float g) { return g / (1.0f + exp_approx(-g)); }

void silu_and_mul(const void *gate_up, void *out, int64_t rows, int64_t width, int is_bf16,
                  int num_threads) {
#pragma omp parallel for num_threads(num_threads) if (rows >= 16) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        if (is_bf16) {
            const uint16_t *gate = (const uint16_t *)gate_up + r * 2 * width, *up = gate + width;
            uint16_t *dst = (uint16_t *)out + r * width;
#pragma omp simd
            for (int64_t i = 0; i < width; i++) {
                const float s = bf16_to_float(float_to_bf16(silu(bf16_to_float(gate[i]))));
                dst[i] = float_to_bf16(s * bf16_to_float(up[i]));
            }
        } else {
            const float *gate = (const float *)gate_up + r * 2 * width, *up = gate + width;
            float *dst = (float *)out + r * width;
#pragma omp simd
            for (int64_t i = 0; i < width; i++) dst[i] = silu(gate[i]) * up[i];
        }
    }
}
