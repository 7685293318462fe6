"""Drift and outlier scores of live inputs against a reference sample (pure numpy).

Per input, each row is flattened into features (the first ``max_features`` of them). For every
feature the reference gives quantile bins (population stability index) and a sorted sample
(two-sample Kolmogorov-Smirnov). A window of live rows is scored per feature; the input's drift
score is the largest PSI, and a feature drifts when its KS p-value, Bonferroni-corrected for
the number of features, is below ``alpha``. Outliers: Mahalanobis distance of a row in the
reference's principal components (at most ``components``), compared with a chi-square
quantile of that many degrees of freedom.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_EPS = 1e-4


def _features(rows: np.ndarray, max_features: int) -> np.ndarray:
    flat = np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)
    return flat[:, :max_features]


def ks_pvalue(d: float, n: int, m: int) -> float:
    """Asymptotic p-value of the two-sample KS statistic ``d`` (Kolmogorov distribution)."""
    if d <= 0:
        return 1.0
    en = math.sqrt(n * m / (n + m))
    lam = (en + 0.12 + 0.11 / en) * d
    total = 0.0
    for j in range(1, 101):
        term = 2 * (-1) ** (j - 1) * math.exp(-2 * j * j * lam * lam)
        total += term
        if abs(term) < 1e-10:
            break
    return float(min(max(total, 0.0), 1.0))


def ks_statistic(reference_sorted: np.ndarray, live: np.ndarray) -> float:
    """The largest gap between the two empirical distribution functions."""
    live_sorted = np.sort(live)
    grid = np.concatenate([reference_sorted, live_sorted])
    cdf_ref = np.searchsorted(reference_sorted, grid, side="right") / len(reference_sorted)
    cdf_live = np.searchsorted(live_sorted, grid, side="right") / len(live_sorted)
    return float(np.max(np.abs(cdf_ref - cdf_live)))


def psi(reference_share: np.ndarray, live_counts: np.ndarray) -> float:
    """Population stability index of live bin counts against reference bin shares."""
    live_share = live_counts / max(live_counts.sum(), 1)
    ref = np.clip(reference_share, _EPS, None)
    cur = np.clip(live_share, _EPS, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def chi2_quantile(q: float, k: int) -> float:
    """Wilson-Hilferty approximation of the chi-square ``q`` quantile with ``k`` dof."""
    # inverse normal by bisection on erf (no scipy)
    lo, hi = -10.0, 10.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < q:
            lo = mid
        else:
            hi = mid
    z = (lo + hi) / 2
    return float(k * (1 - 2 / (9 * k) + z * math.sqrt(2 / (9 * k))) ** 3)


@dataclass
class DriftReport:
    """Scores of one window of one input."""

    psi_max: float
    ks_max: float
    drifted_features: int
    features: int
    drift: bool


class Reference:
    """What live rows of one input are compared with."""

    def __init__(
        self,
        rows: np.ndarray,
        *,
        max_features: int = 64,
        bins: int = 10,
        components: int = 8,
        alpha: float = 0.01,
        psi_threshold: float = 0.2,
        outlier_quantile: float = 0.999,
    ) -> None:
        x = _features(rows, max_features)
        if len(x) < 10:
            raise ValueError("a drift reference needs at least 10 rows")
        self.max_features = max_features
        self.alpha = alpha
        self.psi_threshold = psi_threshold
        self.sorted = np.sort(x, axis=0)
        qs = np.linspace(0, 1, bins + 1)[1:-1]
        self.edges = [np.unique(np.quantile(x[:, f], qs)) for f in range(x.shape[1])]
        self.shares = [
            np.bincount(np.searchsorted(e, x[:, f], side="right"), minlength=len(e) + 1) / len(x)
            for f, e in enumerate(self.edges)
        ]
        self.mean = x.mean(axis=0)
        centred = x - self.mean
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        k = int(max(1, min(components, int(np.sum(s > 1e-9 * max(s.max(), 1e-30))))))
        self.basis = vt[:k]
        projected = centred @ self.basis.T
        self.scale = projected.std(axis=0) + 1e-9
        self.limit = chi2_quantile(outlier_quantile, k)

    def drift(self, rows: np.ndarray) -> DriftReport:
        """Scores of a window of live rows."""
        x = _features(rows, self.max_features)
        n_features = x.shape[1]
        psis, kss, drifted = [], [], 0
        corrected = self.alpha / max(n_features, 1)
        for f in range(n_features):
            counts = np.bincount(
                np.searchsorted(self.edges[f], x[:, f], side="right"),
                minlength=len(self.edges[f]) + 1,
            )
            psis.append(psi(self.shares[f], counts))
            d = ks_statistic(self.sorted[:, f], x[:, f])
            kss.append(d)
            if ks_pvalue(d, len(self.sorted), len(x)) < corrected:
                drifted += 1
        psi_max = max(psis, default=0.0)
        return DriftReport(
            psi_max=psi_max,
            ks_max=max(kss, default=0.0),
            drifted_features=drifted,
            features=n_features,
            drift=psi_max > self.psi_threshold and drifted > 0,
        )

    def outlier_scores(self, rows: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance of each row in the reference's principal components."""
        projected = (_features(rows, self.max_features) - self.mean) @ self.basis.T
        scores: np.ndarray = np.sum((projected / self.scale) ** 2, axis=1)
        return scores

    def outliers(self, rows: np.ndarray) -> np.ndarray:
        """True for rows beyond the chi-square quantile."""
        flagged: np.ndarray = self.outlier_scores(rows) > self.limit
        return flagged
