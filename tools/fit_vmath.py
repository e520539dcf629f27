"""Refit the polynomial coefficients used in kernels/vmath.py (needs scipy).

Iteratively reweighted least squares in float64 approximates a minimax fit;
coefficients are rounded to f32 before their error is reported.
"""
import numpy as np
from scipy.special import erfc


def irls(A, y, rel):
    w = np.ones(len(y))
    for _ in range(30):
        c = np.linalg.lstsq(A * w[:, None], y * w, rcond=None)[0]
        e = np.abs(A @ c - y) / (np.abs(y) if rel else 1)
        w = w * (1 + e / e.max()) ** 2
    c = c.astype(np.float32)
    e = np.abs(A @ c.astype(np.float64) - y) / (np.abs(y) if rel else 1)
    return c, e.max()


def tanh_rational(dp=4, dq=4, iters=60):
    """tanh(x) = x P(x^2) / Q(x^2), Q(0) = 1, on (0, 9.5]: linearised relative fit."""
    x = np.concatenate([np.linspace(1e-4, 1, 20000), np.linspace(1, 9.5, 40000)])
    u, y = x * x, np.tanh(x)
    q_prev, w = np.ones_like(u), np.ones_like(u)
    for _ in range(iters):
        A = np.hstack([x[:, None] * u[:, None] ** np.arange(dp + 1),
                       -(y[:, None] * u[:, None] ** np.arange(1, dq + 1))])
        wt = w / (y * q_prev)
        c = np.linalg.lstsq(A * wt[:, None], y * wt, rcond=None)[0]
        p, q = c[:dp + 1], np.concatenate([[1.0], c[dp + 1:]])
        q_prev = np.polyval(q[::-1], u)
        e = np.abs(x * np.polyval(p[::-1], u) / q_prev - y) / y
        w = w * (1 + e / e.max())
    p32, q32 = p.astype(np.float32), q.astype(np.float32)
    r = x * np.polyval(p32.astype(np.float64)[::-1], u) / np.polyval(q32.astype(np.float64)[::-1], u)
    return p32, q32, np.max(np.abs(r - y) / y)


print("tanh = x P(x^2)/Q(x^2):", *tanh_rational())
z = np.linspace(0, 10, 200001)
t = 2 / (2 + z)
print("log(erfc(z)/t) + z^2 = P(t):", *irls(np.vander(t, 10, increasing=True), np.log(erfc(z) / t) + z * z, False))
