#!/usr/bin/env python3
"""Numerical check of the chunked form of the low-rank class (design-chunked.md,
"The low-rank class"), forward and backward, in float64 plain Python (no NumPy).

One chunk of L steps of
    S_t = S_{t-1} (diag(d_t) + a_t b_t^T) + c_t r_t^T,    y_t = S_t q_t
(S an M x N state; a, b, r, q, d rows of N; c a column of M; d > 0).  This covers
the delta rule (d = 1, a = k, b = -beta k, c = beta v, r = k), the gated delta rule
(d = e^g for every column, b = -beta e^g k) and RWKV-7 (d = e^w a row, a = -kappa,
b = kappa * a_rwkv, c = v, r = k).

Checked: the chunked forward against the step-by-step recurrence (outputs and the
end state), and every gradient of the loss sum(Y * WY) + sum(S_L * WS) from the
chunked backward against central finite differences.  Prints the largest relative
errors; exits 1 if any is above 1e-6.  Run: python3 docs/lowrank_chunk_check.py [seed]
"""
import math
import random
import sys


def mat(rows, cols, f=lambda i, j: 0.0):
    return [[f(i, j) for j in range(cols)] for i in range(rows)]


def mm(A, B):  # A (p x k) B (k x q)
    return [[sum(A[i][t] * B[t][j] for t in range(len(B))) for j in range(len(B[0]))] for i in range(len(A))]


def tr(A):
    return [list(r) for r in zip(*A)]


def add(A, B, s=1.0):
    return [[x + s * y for x, y in zip(ra, rb)] for ra, rb in zip(A, B)]


def had(A, B):
    return [[x * y for x, y in zip(ra, rb)] for ra, rb in zip(A, B)]


def mask(A, strict):  # keep t > s (strict) or t >= s
    return [[A[t][s] if (t > s if strict else t >= s) else 0.0 for s in range(len(A[0]))] for t in range(len(A))]


def recurrence(S0, a, b, c, r, q, d):
    """Step by step: outputs Y (L x M) and the end state."""
    M, N, L = len(S0), len(S0[0]), len(a)
    S = [row[:] for row in S0]
    Y = []
    for t in range(L):
        x = [sum(S[i][n] * a[t][n] for n in range(N)) for i in range(M)]  # S_{t-1} a_t
        S = [[S[i][n] * d[t][n] + x[i] * b[t][n] + c[t][i] * r[t][n] for n in range(N)] for i in range(M)]
        Y.append([sum(S[i][n] * q[t][n] for n in range(N)) for i in range(M)])
    return Y, S


def tilde(a, b, r, q, d):
    """P_t = d_1 ... d_t (P_0 = 1); a~_t = P_{t-1} a_t, b~ = b / P, r~ = r / P, q~ = P q."""
    L, N = len(a), len(a[0])
    P, run = [], [1.0] * N
    for t in range(L):
        prev = run[:]
        run = [run[n] * d[t][n] for n in range(N)]
        P.append((prev, run[:]))
    at = [[P[t][0][n] * a[t][n] for n in range(N)] for t in range(L)]
    bt = [[b[t][n] / P[t][1][n] for n in range(N)] for t in range(L)]
    rt = [[r[t][n] / P[t][1][n] for n in range(N)] for t in range(L)]
    qt = [[P[t][1][n] * q[t][n] for n in range(N)] for t in range(L)]
    return at, bt, rt, qt, P


def solve_lower(G, H):
    """X = (I - G)^{-1} H, G strictly lower triangular: forward substitution."""
    X = []
    for t in range(len(H)):
        X.append([H[t][j] + sum(G[t][s] * X[s][j] for s in range(t)) for j in range(len(H[0]))])
    return X


def solve_upper_T(G, D):
    """(I - G)^{-T} D: back substitution."""
    L = len(D)
    out = [None] * L
    for t in reversed(range(L)):
        out[t] = [D[t][j] + sum(G[s][t] * out[s][j] for s in range(t + 1, L)) for j in range(len(D[0]))]
    return out


def chunk_forward(S0, a, b, c, r, q, d):
    at, bt, rt, qt, P = tilde(a, b, r, q, d)
    C = c  # L x M, rows c_t
    Gab = mask(mm(at, tr(bt)), True)
    Gar = mask(mm(at, tr(rt)), True)
    H = add(mm(at, tr(S0)), mm(Gar, C))
    X = solve_lower(Gab, H)
    Fb = mask(mm(qt, tr(bt)), False)
    Fr = mask(mm(qt, tr(rt)), False)
    Y = add(add(mm(qt, tr(S0)), mm(Fb, X)), mm(Fr, C))
    Z = add(add(S0, mm(tr(X), bt)), mm(tr(C), rt))
    PL = P[-1][1]
    SL = [[Z[i][n] * PL[n] for n in range(len(PL))] for i in range(len(Z))]
    return Y, SL, dict(at=at, bt=bt, rt=rt, qt=qt, P=P, Gab=Gab, Gar=Gar, H=H, X=X, Fb=Fb, Fr=Fr, Z=Z)


def chunk_backward(S0, a, b, c, r, q, d, dY, dSL):
    _, _, f = chunk_forward(S0, a, b, c, r, q, d)
    at, bt, rt, qt, P, X, Z = f["at"], f["bt"], f["rt"], f["qt"], f["P"], f["X"], f["Z"]
    L, N = len(a), len(a[0])
    C = c
    PL = P[-1][1]
    dZ = [[dSL[i][n] * PL[n] for n in range(N)] for i in range(len(dSL))]
    dX = add(mm(tr(f["Fb"]), dY), mm(bt, tr(dZ)))
    dH = solve_upper_T(f["Gab"], dX)
    dC = add(add(mm(tr(f["Fr"]), dY), mm(tr(f["Gar"]), dH)), mm(rt, tr(dZ)))
    dS0 = add(add(mm(tr(dY), qt), mm(tr(dH), at)), dZ)
    dFb = mask(mm(dY, tr(X)), False)
    dFr = mask(mm(dY, tr(C)), False)
    dGab = mask(mm(dH, tr(X)), True)
    dGar = mask(mm(dH, tr(C)), True)
    dqt = add(add(mm(dY, S0), mm(dFb, bt)), mm(dFr, rt))
    dat = add(add(mm(dH, S0), mm(dGab, bt)), mm(dGar, rt))
    dbt = add(add(mm(tr(dFb), qt), mm(tr(dGab), at)), mm(X, dZ))
    drt = add(add(mm(tr(dFr), qt), mm(tr(dGar), at)), mm(C, dZ))
    # untilde, and the log-decay's gradient per step (no division by d)
    da = [[dat[t][n] * P[t][0][n] for n in range(N)] for t in range(L)]
    db = [[dbt[t][n] / P[t][1][n] for n in range(N)] for t in range(L)]
    dr = [[drt[t][n] / P[t][1][n] for n in range(N)] for t in range(L)]
    dq = [[dqt[t][n] * P[t][1][n] for n in range(N)] for t in range(L)]
    dlogP = [[qt[t][n] * dqt[t][n] - bt[t][n] * dbt[t][n] - rt[t][n] * drt[t][n] for n in range(N)] for t in range(L)]
    for t in range(L - 1):  # a~_{t+1} carries P_t
        for n in range(N):
            dlogP[t][n] += at[t + 1][n] * dat[t + 1][n]
    for n in range(N):  # S_L = Z P_L
        dlogP[L - 1][n] += sum(Z[i][n] * dZ[i][n] for i in range(len(Z)))
    dd, run = [None] * L, [0.0] * N
    for t in reversed(range(L)):
        run = [run[n] + dlogP[t][n] for n in range(N)]
        dd[t] = [run[n] / d[t][n] for n in range(N)]  # for the check only: kernels keep d * dd
    return dict(S0=dS0, a=da, b=db, c=dC, r=dr, q=dq, d=dd)


def rel(A, B):
    """||A - B|| / ||B|| over matrices."""
    return math.sqrt(sum((x - y) ** 2 for ra, rb in zip(A, B) for x, y in zip(ra, rb)) /
                     max(1e-300, sum(y * y for rb in B for y in rb)))


def finite_differences(X, f, h=1e-6):
    """The gradient of f() with respect to the matrix X, by central differences
    (each element of X moved in place and restored)."""
    fd = mat(len(X), len(X[0]))
    for i in range(len(X)):
        for j in range(len(X[0])):
            x0 = X[i][j]
            X[i][j] = x0 + h
            lp = f()
            X[i][j] = x0 - h
            lm = f()
            X[i][j] = x0
            fd[i][j] = (lp - lm) / (2 * h)
    return fd


def main():
    seed = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    rnd = random.Random(seed)
    L, M, N = 6, 3, 4
    u = lambda lo, hi: (lambda i, j: rnd.uniform(lo, hi))
    S0 = mat(M, N, u(-1, 1))
    args = dict(a=mat(L, N, u(-0.5, 0.5)), b=mat(L, N, u(-0.5, 0.5)), c=mat(L, M, u(-1, 1)),
                r=mat(L, N, u(-1, 1)), q=mat(L, N, u(-1, 1)), d=mat(L, N, u(0.5, 1.0)))
    WY, WS = mat(L, M, u(-1, 1)), mat(M, N, u(-1, 1))

    def loss(S0_, **kw):
        Y, SL, _ = chunk_forward(S0_, kw["a"], kw["b"], kw["c"], kw["r"], kw["q"], kw["d"])
        return sum(sum(x * w for x, w in zip(ry, rw)) for ry, rw in zip(Y, WY)) + \
            sum(sum(x * w for x, w in zip(rs, rw)) for rs, rw in zip(SL, WS))

    Yr, Sr = recurrence(S0, args["a"], args["b"], args["c"], args["r"], args["q"], args["d"])
    Yc, Sc, _ = chunk_forward(S0, args["a"], args["b"], args["c"], args["r"], args["q"], args["d"])
    errs = {"forward Y": rel(Yc, Yr), "forward S_L": rel(Sc, Sr)}
    g = chunk_backward(S0, args["a"], args["b"], args["c"], args["r"], args["q"], args["d"], WY, WS)
    for name in ["S0", "a", "b", "c", "r", "q", "d"]:
        X = S0 if name == "S0" else args[name]
        errs["grad " + name] = rel(g[name], finite_differences(X, lambda: loss(S0, **args)))
    for k, v in errs.items():
        print("%-12s %.2e" % (k, v))
    sys.exit(0 if max(errs.values()) < 1e-6 else 1)


if __name__ == "__main__":
    main()
