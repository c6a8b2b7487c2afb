// SiLU-and-mul, the gated MLP activation: out = silu(gate) * up, with gate_up = [gate | up].
// Mirrors compiled_kernels/activation.py: silu's result is rounded to the element type before
// the product, as two torch ops would.
//
// gate_up: [rows, 2 * width], contiguous; out: [rows, width], contiguous.

#include "bf16.h"
#include "exp.h"
#include "kernels.h"
#include "lanes.h"

static inline float silu(float g) { return g / (1.0f + exp_approx(-g)); }

// The same on 8 lanes at once, for all but a row's last width % 8 elements. Left to the
// compiler, silu()'s loop computed both sides of exp_approx's clamp (two divisions and three
// blends a vector) at ~9 cycles an element on Zen 3.
static inline vf silu_lanes(vf g) { return g / (1.0f + exp_lanes(-g)); }

// One row; always inlined with is_bf16 a constant, so each element type gets its own loop.
static inline __attribute__((always_inline)) void silu_and_mul_row(const char *gate,
                                                                   const char *up, char *dst,
                                                                   int64_t width, int is_bf16) {
    int64_t i = 0;
    for (; i + 8 <= width; i += 8) {
        const vf s = round_lanes(silu_lanes(load_lanes(gate, i, is_bf16)), is_bf16);
        store_lanes(dst, i, s * load_lanes(up, i, is_bf16), is_bf16);
    }
    for (; i < width; i++) {
        const float s = round_to(silu(load_elem(gate, i, is_bf16)), is_bf16);
        store_elem(dst, i, s * load_elem(up, i, is_bf16), is_bf16);
    }
}

void silu_and_mul(const void *gate_up, void *out, int64_t rows, int64_t width, int is_bf16,
                  int num_threads) {
    const int64_t elem = is_bf16 ? 2 : 4;
#pragma omp parallel for num_threads(num_threads) if (rows >= 16) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const char *gate = (const char *)gate_up + r * 2 * width * elem, *up = gate + width * elem;
        char *dst = (char *)out + r * width * elem;
        if (is_bf16) silu_and_mul_row(gate, up, dst, width, 1);
        else silu_and_mul_row(gate, up, dst, width, 0);
    }
}
