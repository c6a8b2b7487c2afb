// 8 float32 lanes and the multiply-add the kernels accumulate with: fused where the build has
// FMA (x86-64-v3 and up), written out rather than left to the compiler's contraction (off under
// -std=c11), so every kernel and every block computes it the same way.
#pragma once

#ifdef __FMA__
#include <immintrin.h>
#endif

typedef float vf __attribute__((vector_size(32)));

static inline vf multiply_add(vf acc, vf x, vf y) {
#ifdef __FMA__
    return (vf)_mm256_fmadd_ps((__m256)x, (__m256)y, (__m256)acc);
#else
    return acc + x * y;
#endif
}
