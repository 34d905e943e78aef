#!/usr/bin/env python3
"""Numerical check of the split the low-rank class's kernels would take next
(design-chunked.md, "The low-rank kernels as built", what would reach the targets):
everything that does not depend on the carried state computed per chunk in
parallel, and a short sequential pass over the chunks, forward and backward.
Plain Python, float64 (no NumPy); the one-chunk algebra is lowrank_chunk_check.py's.

Per chunk (tilde quantities as there; B~e = b~ P_L and R~e = r~ P_L, rows scaled by
the chunk's whole decay; TI = (I - G_ab)^-1):
  parallel:   W = TI A~ [L,N], U = TI G_ar C [L,M], Qe = Q~ + F_b W [L,N],
              Yi = F_b U + F_r C [L,M]
  sequential: X = U + W S_0^T, Y = Qe S_0^T + Yi, S_L = S_0 * P_L + X^T B~e + C^T R~e
  (three [L,N] x [N,M] or [M,L] x [L,N] products a chunk, and no solve).
Backward, given dY and the gradient after the last chunk:
  parallel:   Hy = TI^T F_b^T dY [L,M], Bhe = TI^T B~e [L,N]
  sequential: dH = Hy + Bhe dS_L^T, dS_0 = dS_L * P_L + dY^T Q~ + dH^T A~ (three
              products a chunk), storing each chunk's dS_L
  parallel:   every term's gradient per chunk from its S_0 and dS_L (the one-chunk
              backward, lowrank_chunk_check.chunk_backward).
Checked: the split forward against the step-by-step recurrence over several
chunks; the sequential pass's dS_0 against the one-chunk backward's; every
gradient of sum(Y * WY) + sum(S_T * WS) against central finite differences.
Exits 1 if any relative error is above 1e-6.  Run: python3 docs/lowrank_split_check.py [seed]
"""
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lowrank_chunk_check import add, mask, mat, mm, recurrence, solve_lower, solve_upper_T, tilde, tr  # noqa: E402
from lowrank_chunk_check import chunk_backward, finite_differences, rel  # noqa: E402


def identity(L):
    return mat(L, L, lambda i, j: 1.0 if i == j else 0.0)


def scale_cols(A, p):
    return [[x * p[n] for n, x in enumerate(row)] for row in A]


def precompute(a, b, c, r, q, d):
    """The per-chunk quantities that do not depend on the carried state."""
    at, bt, rt, qt, P = tilde(a, b, r, q, d)
    PL = P[-1][1]
    L = len(a)
    Gab, Gar = mask(mm(at, tr(bt)), True), mask(mm(at, tr(rt)), True)
    Fb, Fr = mask(mm(qt, tr(bt)), False), mask(mm(qt, tr(rt)), False)
    TI = solve_lower(Gab, identity(L))  # (I - G_ab)^-1
    W = mm(TI, at)
    U = mm(TI, mm(Gar, c))
    return dict(at=at, qt=qt, PL=PL, W=W, U=U, Qe=add(qt, mm(Fb, W)), Yi=add(mm(Fb, U), mm(Fr, c)),
                Bte=scale_cols(bt, PL), Rte=scale_cols(rt, PL), C=c, Fb=Fb, Gab=Gab)


def split_forward(S0, chunks):
    """Sequential pass over the chunks: outputs, each chunk's start state, the end."""
    S, Y, starts = S0, [], []
    for ch in chunks:
        pre = ch["pre"]
        starts.append(S)
        X = add(pre["U"], mm(pre["W"], tr(S)))
        Y += add(mm(pre["Qe"], tr(S)), pre["Yi"])
        S = add(add(scale_cols(S, pre["PL"]), mm(tr(X), pre["Bte"])), mm(tr(pre["C"]), pre["Rte"]))
    return Y, S, starts


def split_backward(dY, dST, chunks, starts):
    """Sequential pass in reverse (dS per chunk), then each chunk's gradients."""
    L = len(chunks[0]["a"])
    dS, grads = dST, [None] * len(chunks)
    for k in reversed(range(len(chunks))):
        pre, dYk = chunks[k]["pre"], dY[k * L:(k + 1) * L]
        Hy = solve_upper_T(pre["Gab"], mm(tr(pre["Fb"]), dYk))  # TI^T F_b^T dY
        Bhe = solve_upper_T(pre["Gab"], pre["Bte"])  # TI^T B~e
        dH = add(Hy, mm(Bhe, tr(dS)))
        dS0 = add(add(scale_cols(dS, pre["PL"]), mm(tr(dYk), pre["qt"])), mm(tr(dH), pre["at"]))
        ch = chunks[k]
        grads[k] = chunk_backward(starts[k], ch["a"], ch["b"], ch["c"], ch["r"], ch["q"], ch["d"], dYk, dS)
        grads[k]["dS0_split"] = dS0
        dS = dS0
    return grads, dS


def main():
    seed = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    rnd = random.Random(seed)
    L, M, N, K = 4, 3, 4, 3  # K chunks of L steps
    u = lambda lo, hi: (lambda i, j: rnd.uniform(lo, hi))
    S0 = mat(M, N, u(-1, 1))
    T = K * L
    seq = dict(a=mat(T, N, u(-0.5, 0.5)), b=mat(T, N, u(-0.5, 0.5)), c=mat(T, M, u(-1, 1)),
               r=mat(T, N, u(-1, 1)), q=mat(T, N, u(-1, 1)), d=mat(T, N, u(0.5, 1.0)))
    WY, WS = mat(T, M, u(-1, 1)), mat(M, N, u(-1, 1))
    names = ["a", "b", "c", "r", "q", "d"]

    def chunked(seq_):
        out = []
        for k in range(K):
            ch = {n: seq_[n][k * L:(k + 1) * L] for n in names}
            ch["pre"] = precompute(ch["a"], ch["b"], ch["c"], ch["r"], ch["q"], ch["d"])
            out.append(ch)
        return out

    def loss(S0_, seq_):
        Y, ST, _ = split_forward(S0_, chunked(seq_))
        return sum(x * w for ry, rw in zip(Y, WY) for x, w in zip(ry, rw)) + \
            sum(x * w for rs, rw in zip(ST, WS) for x, w in zip(rs, rw))

    Yr, Sr = recurrence(S0, *(seq[n] for n in names))
    chunks = chunked(seq)
    Yc, Sc, starts = split_forward(S0, chunks)
    errs = {"forward Y": rel(Yc, Yr), "forward S_T": rel(Sc, Sr)}
    grads, dS0 = split_backward(WY, WS, chunks, starts)
    errs["dS_0 sequential"] = max(rel(g["dS0_split"], g["S0"]) for g in grads)
    g_all = {n: sum((g[n] for g in grads), []) for n in names}
    g_all["S0"] = dS0
    for name in ["S0"] + names:
        X = S0 if name == "S0" else seq[name]
        errs["grad " + name] = rel(g_all[name], finite_differences(X, lambda: loss(S0, seq)))
    for k, v in errs.items():
        print("%-16s %.2e" % (k, v))
    sys.exit(0 if max(errs.values()) < 1e-6 else 1)


if __name__ == "__main__":
    main()
