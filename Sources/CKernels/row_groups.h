// Shared by kernels.c (exact kernels) and quantdot.c (8-bit-activation kernels).
#ifndef FINETUNE_ROW_GROUPS_H
#define FINETUNE_ROW_GROUPS_H

/// Runs `rows_fn(kind, M, w, rb, n, k, x + r·ldx, ldx, y + r·ldy, ldy)` over the `m` input rows
/// in groups of three (then two or one), so each group shares the weight loads and decoding.
#define FT_ROW_GROUPS(rows_fn, kind, w, rb, n, k, x, m, ldx, y, ldy)                               \
    do {                                                                                           \
        long r_ = 0;                                                                               \
        for (; r_ + 3 <= (m); r_ += 3) rows_fn(kind, 3, w, rb, n, k, (x) + r_ * (ldx), ldx, (y) + r_ * (ldy), ldy); \
        if ((m) - r_ == 2) rows_fn(kind, 2, w, rb, n, k, (x) + r_ * (ldx), ldx, (y) + r_ * (ldy), ldy);          \
        if ((m) - r_ == 1) rows_fn(kind, 1, w, rb, n, k, (x) + r_ * (ldx), ldx, (y) + r_ * (ldy), ldy);          \
    } while (0)

#endif
