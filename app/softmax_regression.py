"""Exact multinomial logistic regression for few-shot episodes (scikit-learn's model, solved to its optimum).

The model is scikit-learn's `LogisticRegression()` for more than two classes: minimise
    C * sum_i cross_entropy(softmax(x_i W + b), y_i) + 0.5 * ||W||^2      (b not penalised)
Why not scikit-learn itself: its lbfgs took about 0.6 s per 20-way episode on 1280-d features
(most of a 600-episode evaluation), and at its default tolerance it stops short of the optimum.

Three exact reductions make an episode's problem small and well-posed:
- the optimal W lies in the span of the support rows (the loss gradient X^T (P - Y) and the
  L2 term both keep it there), so the fit runs in an orthonormal basis of that span: r <= S
  dimensions instead of D, with the same norms and the same optimum;
- adding one constant to every intercept changes no probability: 0.5 * (sum b)^2 pins that
  flat direction (sum b = 0) and changes no prediction;
- the problem is then strongly convex and small: Newton steps with the explicit Hessian
  (a (r+1)k x (r+1)k solve) and a backtracking line search converge in about ten steps; above
  NEWTON_MAX_VARIABLES unknowns, Hessian-vector products (scipy's trust-ncg) replace the solve.
Linear algebra runs on one BLAS thread: these matrices are tiny, and OpenBLAS threads on a
busy 2-core machine made a 420 x 420 solve 25x slower than one thread.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp, softmax

from app.small_fits import one_thread

NEWTON_MAX_VARIABLES = 1000
GRADIENT_TOLERANCE = 1e-7
MAX_NEWTON_STEPS = 100


def support_basis(support: np.ndarray) -> np.ndarray:
    """Orthonormal basis [D, r] of the span of the support rows (r <= number of support examples)."""
    _, singular, vt = np.linalg.svd(support, full_matrices=False)
    if not singular.size or singular[0] <= 0:
        return np.zeros((support.shape[1], 0))
    return vt[singular > singular[0] * 1e-10].T


class _Problem:
    """The episode's objective in the reduced coordinates; weights [r + 1, k], last row = intercepts."""

    def __init__(self, x: np.ndarray, labels: np.ndarray, ways: int, c: float):
        self.x = np.hstack([x, np.ones((len(x), 1))])
        self.rows, self.ways, self.c = self.x.shape[1], ways, c
        self.targets = np.eye(ways)[labels]
        self.penalty = np.ones((self.rows, ways))
        self.penalty[-1] = 0.0

    @property
    def size(self) -> int:
        return self.rows * self.ways

    def value(self, w: np.ndarray) -> float:
        logits = self.x @ w
        loss = np.sum(logsumexp(logits, axis=1) - np.sum(logits * self.targets, axis=1), axis=0)
        return float(self.c * loss + 0.5 * np.sum(self.penalty * w * w) + 0.5 * np.sum(w[-1]) ** 2)

    def gradient(self, w: np.ndarray) -> np.ndarray:
        g = self.c * self.x.T @ (softmax(self.x @ w, axis=1) - self.targets) + self.penalty * w
        g[-1] += np.sum(w[-1])
        return g

    def hessian(self, w: np.ndarray) -> np.ndarray:
        p = softmax(self.x @ w, axis=1)
        softmax_jacobian = p[:, :, None] * np.eye(self.ways)[None] - p[:, :, None] * p[:, None, :]  # [S, k, k]
        outer = (self.x[:, :, None] * self.x[:, None, :]).reshape(len(self.x), -1)  # [S, rows * rows]
        h = (outer.T @ softmax_jacobian.reshape(len(self.x), -1)).reshape(self.rows, self.rows, self.ways, self.ways)
        h = self.c * h.transpose(0, 2, 1, 3).reshape(self.size, self.size)
        h[np.diag_indices(self.size)] += self.penalty.ravel()
        intercepts = np.arange(self.size - self.ways, self.size)
        h[np.ix_(intercepts, intercepts)] += 1.0  # the (sum b)^2 term
        return h

    def hessian_times(self, w: np.ndarray, direction: np.ndarray) -> np.ndarray:
        p = softmax(self.x @ w, axis=1)
        change = self.x @ direction
        hv = self.c * self.x.T @ (p * (change - np.sum(p * change, axis=1, keepdims=True))) + self.penalty * direction
        hv[-1] += np.sum(direction[-1])
        return hv

    def newton(self) -> np.ndarray:
        w = np.zeros((self.rows, self.ways))
        value = self.value(w)
        for _ in range(MAX_NEWTON_STEPS):
            g = self.gradient(w)
            if np.max(np.abs(g)) < GRADIENT_TOLERANCE:
                break
            step = np.linalg.solve(self.hessian(w), g.ravel()).reshape(w.shape)
            slope, t = float(np.sum(g * step)), 1.0
            while True:  # backtracking (Armijo): full Newton steps near the optimum
                candidate = w - t * step
                candidate_value = self.value(candidate)
                if candidate_value <= value - 1e-4 * t * slope or t < 1e-8:
                    break
                t *= 0.5
            if candidate_value > value:
                break  # no descent left at machine precision
            w, value = candidate, candidate_value
        return w

    def trust_region(self) -> np.ndarray:
        from scipy.optimize import minimize

        shape = (self.rows, self.ways)
        result = minimize(lambda t: self.value(t.reshape(shape)), np.zeros(self.size),
                          jac=lambda t: self.gradient(t.reshape(shape)).ravel(),
                          hessp=lambda t, v: self.hessian_times(t.reshape(shape), v.reshape(shape)).ravel(),
                          method="trust-ncg", options={"gtol": GRADIENT_TOLERANCE, "maxiter": 500})
        return result.x.reshape(shape)


def fit_predict(support: np.ndarray, support_labels: np.ndarray, query: np.ndarray, ways: int,
                c: float = 1.0) -> np.ndarray:
    """Fit on the support (float64 rows), return the predicted class of every query row."""
    labels = np.asarray(support_labels).astype(np.int64).reshape(-1)
    ways = max(int(ways), int(labels.max()) + 1)
    with one_thread():  # app/small_fits.py
        basis = support_basis(support)
        problem = _Problem(support @ basis, labels, ways, c)
        w = problem.newton() if problem.size <= NEWTON_MAX_VARIABLES else problem.trust_region()
        return np.argmax(query @ basis @ w[:-1] + w[-1], axis=1).astype(np.int64)
