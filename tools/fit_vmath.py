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


x = np.linspace(1e-6, 0.625, 20001)
print("tanh(x)/x = P(x^2):", *irls(np.vander(x * x, 6, increasing=True), np.tanh(x) / x, True))
z = np.linspace(0, 10, 200001)
t = 2 / (2 + z)
print("log(erfc(z)/t) + z^2 = P(t):", *irls(np.vander(t, 10, increasing=True), np.log(erfc(z) / t) + z * z, False))
