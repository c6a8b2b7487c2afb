// Greedy sampling: the index of each row's largest logit, as torch.argmax gives it (the first
// of equal maxima; the first NaN if the row holds one). torch's CPU argmax tracks an index per
// element and runs ~16x slower than a sum over the same floats (2.1 ms for [32, 49152] on two
// threads, AMD EPYC Zen 3): here a vectorised max, then a scan for its first position.
//
// logits: [rows, vocab] float32, contiguous; out: [rows] int64.

#include <math.h>
#include <stdint.h>

#include "kernels.h"

static int64_t row_argmax(const float *row, int64_t vocab) {
    float best = row[0];
    int any_nan = 0;
#pragma omp simd reduction(max : best) reduction(| : any_nan)
    for (int64_t i = 0; i < vocab; i++) {
        best = row[i] > best ? row[i] : best;
        any_nan |= row[i] != row[i];
    }
    if (any_nan) {
        for (int64_t i = 0; i < vocab; i++)
            if (isnan(row[i])) return i;
    }
    for (int64_t i = 0; i < vocab; i++)
        if (row[i] == best) return i;
    return 0;  // not reached
}

void argmax_rows(const float *logits, int64_t *out, int64_t rows, int64_t vocab,
                 int num_threads) {
#pragma omp parallel for num_threads(num_threads) if (rows >= 4) schedule(static)
    for (int64_t r = 0; r < rows; r++) out[r] = row_argmax(logits + r * vocab, vocab);
}
