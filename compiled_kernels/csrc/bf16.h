// bfloat16 <-> float32, rounding to nearest even as torch does.
#pragma once

#include <stdint.h>
#include <string.h>

static inline float bf16_to_float(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline uint16_t float_to_bf16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40);  // NaN
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return (uint16_t)(bits >> 16);
}

// Element i of a bf16 (is_bf16) or float32 array, as float.
static inline float load_elem(const void *base, int64_t i, int is_bf16) {
    return is_bf16 ? bf16_to_float(((const uint16_t *)base)[i]) : ((const float *)base)[i];
}

// Stores v as the array's element type; returns what was stored, as float (the rounded value,
// which torch's twin would compute on with).
static inline float store_elem(void *base, int64_t i, float v, int is_bf16) {
    if (is_bf16) {
        uint16_t h = float_to_bf16(v);
        ((uint16_t *)base)[i] = h;
        return bf16_to_float(h);
    }
    ((float *)base)[i] = v;
    return v;
}

// Rounds v to the element type's precision (a torch op's output in that dtype).
static inline float round_to(float v, int is_bf16) {
    return is_bf16 ? bf16_to_float(float_to_bf16(v)) : v;
}
