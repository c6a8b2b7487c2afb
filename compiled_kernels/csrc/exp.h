// A vectorisable expf: the compiler turns libm's expf into a scalar call per element, which
// made SiLU over a [32, 1536] batch ten times slower than torch's vectorised version.
// exp(x) = 2^n * e^r with n = round(x / ln 2) and |r| <= ln 2 / 2, e^r by its Taylor series to
// degree 7 (relative error ~1e-7, float32 rounding level).
#pragma once

#include <stdint.h>
#include <string.h>

// e^r for x clamped to [-87, 88] (2^n then stays a normal float), as n * ln 2 + r: written once
// for a float and for GCC vectors of floats (whose operators take a float operand as well), so
// that exp_approx and the vector kernels' versions (prefill_attention.c) do the same operations.
#define EXP_REDUCED(x, n, p)                                                               \
    do {                                                                                   \
        /* Adding and subtracting 1.5 * 2^23 rounds to the nearest integer (and vectorises). */ \
        n = ((x) * 1.44269504088896341f + 12582912.0f) - 12582912.0f;                      \
        const __typeof__(n) r_ = (x) - n * 0.693145751953125f - n * 1.428606765330187045e-06f; \
        p = r_ * (1.0f / 5040.0f) + 1.0f / 720.0f;                                         \
        p = p * r_ + 1.0f / 120.0f;                                                        \
        p = p * r_ + 1.0f / 24.0f;                                                         \
        p = p * r_ + 1.0f / 6.0f;                                                          \
        p = p * r_ + 0.5f;                                                                 \
        p = p * r_ + 1.0f;                                                                 \
        p = p * r_ + 1.0f;                                                                 \
    } while (0)

// exp_approx on every lane of x, a GCC vector of floats whose vector of int32 is I: the clamp as
// lane selects, then the same operations, so lane by lane the same values. One definition for
// lanes.h's 8 lanes and prefill_attention.c's (16 with AVX-512).
#define EXP_LANES(x, I)                                                                    \
    __extension__({                                                                        \
        __typeof__(x) x_ = (x), n_, p_;                                                    \
        const __typeof__(x) zero_ = {0};                                                   \
        const I low_ = x_ < -87.0f;                                                        \
        x_ = (__typeof__(x))((low_ & (I)(zero_ - 87.0f)) | (~low_ & (I)x_));               \
        const I high_ = x_ > 88.0f;                                                        \
        x_ = (__typeof__(x))((high_ & (I)(zero_ + 88.0f)) | (~high_ & (I)x_));             \
        EXP_REDUCED(x_, n_, p_);                                                           \
        p_ * (__typeof__(x))((__builtin_convertvector(n_, I) + 127) << 23); /* 2^n */      \
    })

static inline float exp_approx(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    float n, p;
    EXP_REDUCED(x, n, p);
    const uint32_t bits = (uint32_t)((int32_t)n + 127) << 23;  // 2^n, n in [-126, 127]
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}
