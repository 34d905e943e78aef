#!/usr/bin/env python3
"""Check of the pair-free form of a scalar decay's gradient (design-chunked.md, "The
kernels as built", next step 3), in general: every read of the state (an output's
term, old or new state, and the rank-one term's a) against every write (a column x
row update and the rank-one term's x b^T).  Plain Python, float64, one chunk.

With a scalar decay d_t (the same for every column), the gradient of log d_s is

  ld_s = P_last sum_{i,n} dS_end[i][n] S_0[i][n]                      (end state, S_0)
       + sum_{writes v < s} row_v . dR_end_v                           (end state, writes)
       + sum_{reads u: l(u) >= s} w_u . dW_state_u                     (reads of S_0)
       + sum_{pairs} sum_{v < s <= l(u)} Ag[u][v] QK[u][v]             (reads of writes)

where l(u) is the step whose state read u sees, dW_state_u = P_l(u) S_0^T g_u,
dR_end_v = R(last, v) col_v^T dS_end, Ag[u][v] = (g_u . col_v) R(l(u), v) and
QK[u][v] = w_u . row_v (g: the read's gradient, dY for an output, dH for the rank-one
term; col: c, or the solved x).  It is the derivative of the chunk's linear form with
respect to log d_s, pair by pair, so no pair (u, v) on the same side of s enters: the
kernels' reverse running sum of w dw - r dr carries those and their float32 errors
(docs/scalar_decay_precision.c).  Checked here against the one-chunk backward of
lowrank_chunk_check.py (its per-column log-decay gradient summed over columns), which
finite differences check.  Exits 1 above 1e-10.  Run: python3 docs/scalar_decay_pairfree_check.py [seed]
"""
import math
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lowrank_chunk_check import add, chunk_backward, chunk_forward, mat, mm, solve_upper_T, tr  # noqa: E402


def main():
    seed = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    rnd = random.Random(seed)
    L, M, N = 7, 3, 4
    u = lambda lo, hi: (lambda i, j: rnd.uniform(lo, hi))
    S0 = mat(M, N, u(-1, 1))
    a, b = mat(L, N, u(-0.5, 0.5)), mat(L, N, u(-0.5, 0.5))
    c, r, q = mat(L, M, u(-1, 1)), mat(L, N, u(-1, 1)), mat(L, N, u(-1, 1))
    dsc = [rnd.uniform(0.5, 1.0) for _ in range(L)]
    d = [[dsc[t]] * N for t in range(L)]  # scalar: every column the same
    dY, dSL = mat(L, M, u(-1, 1)), mat(M, N, u(-1, 1))

    # The reference: the one-chunk backward's per-column log-decay gradient,
    # d * dd, summed over the columns (the scalar's).
    g = chunk_backward(S0, a, b, c, r, q, d, dY, dSL)
    want = [sum(g["d"][t][n] * d[t][n] for n in range(N)) for t in range(L)]

    # What the pair-free form needs: X and dH (as the kernels have them).
    _, _, f = chunk_forward(S0, a, b, c, r, q, d)
    X = f["X"]
    P = [1.0] * L  # P[t] = d_0 ... d_t
    for t in range(L):
        P[t] = (P[t - 1] if t else 1.0) * dsc[t]

    def R(l, v):  # d_{v+1} ... d_l (1 for l = v); P_l for v = -1
        x = 1.0
        for t in range(v + 1, l + 1):
            x *= dsc[t]
        return x

    PL = P[-1]
    dZ = [[dSL[i][n] * PL for n in range(N)] for i in range(M)]
    dX = add(mm(tr(f["Fb"]), dY), mm(f["bt"], tr(dZ)))
    dH = solve_upper_T(f["Gab"], dX)
    # reads: (w, g, l) per step; writes: (col, row) per step
    reads = [(q[t], dY[t], t) for t in range(L)] + [(a[t], dH[t], t - 1) for t in range(L)]
    writes = [(c[v], r[v], v) for v in range(L)] + [(X[v], b[v], v) for v in range(L)]
    dot = lambda x, y: sum(p * q_ for p, q_ in zip(x, y))

    got = []
    for s in range(L):
        ld = PL * sum(dSL[i][n] * S0[i][n] for i in range(M) for n in range(N))
        for col, row, v in writes:
            if v < s:
                dR_end = [R(L - 1, v) * sum(col[i] * dSL[i][n] for i in range(M)) for n in range(N)]
                ld += dot(row, dR_end)
        for w, gr, l in reads:
            if l >= s:
                dW_state = [R(l, -1) * sum(S0[i][n] * gr[i] for i in range(M)) for n in range(N)]
                ld += dot(w, dW_state)
            for col, row, v in writes:
                if v < s <= l:
                    ld += dot(gr, col) * R(l, v) * dot(w, row)
        got.append(ld)
    err = math.sqrt(sum((x - y) ** 2 for x, y in zip(got, want)) / sum(y * y for y in want))
    print("pair-free log-decay gradient against the chunked backward: %.2e" % err)
    sys.exit(0 if err < 1e-10 else 1)


if __name__ == "__main__":
    main()
