// Elementwise work on 8 float32 lanes at once, written with GCC's vector types so that every
// build level compiles it (AVX2 registers where the CPU has them). Each helper does on every
// lane exactly what its scalar twin does on one element, so a kernel can run its rows 8
// elements at a time and finish the last few with the scalar code, with the same values.
#pragma once

#include <stdint.h>
#include <string.h>

#include "exp.h"
#include "vec.h"

typedef int32_t vi __attribute__((vector_size(32)));
typedef uint32_t vu __attribute__((vector_size(32)));
typedef uint16_t vh __attribute__((vector_size(16)));  // 8 bfloat16

// bf16.h's bf16_to_float and float_to_bf16.
static inline vf widen_lanes(vh h) { return (vf)(__builtin_convertvector(h, vu) << 16); }

static inline vh narrow_lanes(vf v) {
    const vu bits = (vu)v;
    const vi nan = (vi)((bits & 0x7fffffffu) > 0x7f800000u);
    const vu rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
    const vu quiet = (bits >> 16) | 0x40u;
    return __builtin_convertvector((vu)((nan & (vi)quiet) | (~nan & (vi)rounded)), vh);
}

// 8 elements from / to a bfloat16 (is_bf16) or float32 array, at element i.
static inline vf load_lanes(const void *base, int64_t i, int is_bf16) {
    vf v;
    if (is_bf16) {
        vh h;
        memcpy(&h, (const uint16_t *)base + i, sizeof h);
        return widen_lanes(h);
    }
    memcpy(&v, (const float *)base + i, sizeof v);
    return v;
}

// Stores v as the array's element type; returns what was stored, as float (bf16.h's store_elem).
static inline vf store_lanes(void *base, int64_t i, vf v, int is_bf16) {
    if (is_bf16) {
        const vh h = narrow_lanes(v);
        memcpy((uint16_t *)base + i, &h, sizeof h);
        return widen_lanes(h);
    }
    memcpy((float *)base + i, &v, sizeof v);
    return v;
}

// Rounds v to the element type's precision (bf16.h's round_to).
static inline vf round_lanes(vf v, int is_bf16) {
    return is_bf16 ? widen_lanes(narrow_lanes(v)) : v;
}

// exp.h's exp_approx.
static inline vf exp_lanes(vf x) { return EXP_LANES(x, vi); }
