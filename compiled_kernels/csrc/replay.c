// A recorded decode step (engine/cpu_graphs.py) replayed in one call from Python.
//
// Replayed from Python, each of a step's ~300 kernel calls went through ctypes, which converts
// the arguments, releases the GIL and takes it back: ~5 us a call, a sixth of a one-sequence
// step of the embedded model, and in the server every call took the GIL back from the event
// loop's thread. Here the whole list runs with the GIL released once.
//
// calls: [n] each kernel's arguments as native.py recorded them, all but the row count, which
// goes in at rows_at: the rows of this replay.

#include <stdint.h>

#include "kernels.h"

enum { MAX_ARGS = 20 };  // native._MAX_ARGS

typedef union {
    int64_t i;  // int64_t and int arguments
    void *p;
    float f;
} Arg;

typedef struct {
    int64_t kernel;  // an enum Kernel
    int64_t rows_at;
    Arg args[MAX_ARGS];
} KernelCall;

// In the order of native.ROWS_ARGUMENT.
enum Kernel {
    LINEAR,
    INT8_LINEAR,
    INT4_LINEAR,
    RMS_NORM,
    APPLY_ROTARY,
    SILU_AND_MUL,
    WRITE_KV,
    PAGED_DECODE_ATTENTION,
};

// One call; a kernel's nonzero status, or -1 for an unknown kernel.
static int run(const KernelCall *call, int64_t rows) {
    Arg a[MAX_ARGS];
    for (int k = 0; k < MAX_ARGS; k++) a[k] = call->args[k];
    a[call->rows_at].i = rows;
    switch (call->kernel) {
        case LINEAR:
            return linear(a[0].p, a[1].i, a[2].p, a[3].p, a[4].p, a[5].i, a[6].i, a[7].i,
                          (int)a[8].i, (int)a[9].i, (int)a[10].i);
        case INT8_LINEAR:
            return int8_linear(a[0].p, a[1].i, a[2].p, a[3].p, a[4].p, a[5].p, a[6].i, a[7].i,
                               a[8].i, (int)a[9].i, (int)a[10].i);
        case INT4_LINEAR:
            return int4_linear(a[0].p, a[1].i, a[2].p, a[3].p, a[4].p, a[5].p, a[6].p, a[7].i,
                               a[8].i, a[9].i, (int)a[10].i, (int)a[11].i);
        case RMS_NORM:
            rms_norm(a[0].p, a[1].i, a[2].p, a[3].p, a[4].p, a[5].p, a[6].i, a[7].i, a[8].f,
                     (int)a[9].i, (int)a[10].i);
            return 0;
        case APPLY_ROTARY:
            apply_rotary(a[0].p, a[1].i, a[2].p, a[3].p, a[4].p, a[5].i, a[6].i, a[7].i,
                         (int)a[8].i, (int)a[9].i);
            return 0;
        case SILU_AND_MUL:
            silu_and_mul(a[0].p, a[1].p, a[2].i, a[3].i, (int)a[4].i, (int)a[5].i);
            return 0;
        case WRITE_KV:
            write_kv(a[0].p, a[1].i, a[2].p, a[3].i, a[4].p, a[5].p, a[6].p, a[7].i, a[8].i,
                     a[9].i, a[10].i, (int)a[11].i, (int)a[12].i);
            return 0;
        case PAGED_DECODE_ATTENTION:
            return paged_decode_attention(a[0].p, a[1].p, a[2].p, a[3].p, a[4].p, a[5].p, a[6].i,
                                          a[7].i, a[8].i, a[9].i, a[10].i, a[11].i, a[12].i,
                                          a[13].i, a[14].f, a[15].i, a[16].f, (int)a[17].i,
                                          (int)a[18].i, (int)a[19].i);
        default:
            return -1;
    }
}

// 0 when every call succeeded, else 1 + the index of the first that failed (the rest are
// skipped).
int64_t replay_calls(const KernelCall *calls, int64_t n, int64_t rows) {
    for (int64_t c = 0; c < n; c++)
        if (run(calls + c, rows) != 0) return c + 1;
    return 0;
}
