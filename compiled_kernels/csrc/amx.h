// AMX tiles (Intel since Sapphire Rapids) for the quantized kernels' many-row paths: one tile
// instruction computes 16 x 16 integer sums of 32 products each. The sums are the integers the
// vector paths compute, so which path a row takes never changes its bits. A source including
// it defines _GNU_SOURCE before its first include (for syscall()).
#pragma once

#ifdef __AMX_INT8__
#include <immintrin.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

enum { TILE_ROWS = 16 };

// Tile shapes, palette 1: rows and bytes per row of tiles 0..7.
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t bytes_per_row[16];
    uint8_t rows[16];
} TileConfig;

// Linux gives the tile registers' state only to a process that asks (once, for all threads);
// 0 where it refuses (an old kernel, a hypervisor that does not pass AMX on).
static inline int amx_allowed(void) {
    static int allowed = -1;
    if (allowed < 0)
        allowed = syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */,
                          18 /* XFEATURE_XTILEDATA */) == 0;
    return allowed;
}
#endif
