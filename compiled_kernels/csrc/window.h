// The sliding-window rule the attention kernels share (decode and prefill).
#pragma once

#include <stdint.h>

// The first key position a query at position pos sees: with window > 0 only the last `window`
// positions, itself included; else all from 0.
static inline int64_t first_key(int64_t pos, int64_t window) {
    return window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
}
