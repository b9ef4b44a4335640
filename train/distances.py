"""FID and KID on feature arrays [N, d], in NumPy (float64) and torch-free.

FID: the Fréchet distance between Gaussian fits of the two feature sets,
|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)). KID: the unbiased MMD^2 with the polynomial kernel
k(x, y) = (x.y / d + 1)^3, averaged over random subsets. Which features they are computed on (and so
what the numbers mean) is metrics.py's business.
"""

from __future__ import annotations

import numpy as np

from gen.runtime.errors import GenError


def frechet_distance(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)), in float64.

    tr((S1 S2)^(1/2)) equals tr((R S2 R)^(1/2)) with R = S1^(1/2) (same eigenvalues), and R S2 R is
    symmetric positive semi-definite, so symmetric eigen-decompositions give it without complex
    round-off or scipy.
    """
    vals, vecs = np.linalg.eigh(np.asarray(s1, np.float64))
    root1 = (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T
    m = root1 @ np.asarray(s2, np.float64) @ root1
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    diff = np.asarray(mu1, np.float64) - np.asarray(mu2, np.float64)
    fid = diff @ diff + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt
    return float(max(fid, 0.0))  # rounding can put identical sets a hair below 0


def gaussian_fit(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(features, np.float64)
    if len(f) < 2:
        raise GenError(f"a Gaussian fit needs at least 2 feature vectors, got {len(f)}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def fid_from_features(a: np.ndarray, b: np.ndarray) -> float:
    """FID of two feature sets [N, d].

    With fewer pictures than dimensions (1000 < 1280 is the usual case), the trace term comes from the
    samples: S = A^T A with A the centred features / sqrt(N - 1), and tr((S1 S2)^(1/2)) is the sum of the
    singular values of A1 A2^T (same non-zero eigenvalues), an N1 x N2 matrix instead of d x d ones.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if min(len(a), len(b)) >= a.shape[1]:
        return frechet_distance(*gaussian_fit(a), *gaussian_fit(b))
    if min(len(a), len(b)) < 2:
        raise GenError(f"FID needs at least 2 feature vectors per set, got {len(a)} and {len(b)}")
    mu1, mu2 = a.mean(axis=0), b.mean(axis=0)
    a1, a2 = (a - mu1) / np.sqrt(len(a) - 1), (b - mu2) / np.sqrt(len(b) - 1)
    trace_sqrt = np.linalg.svd(a1 @ a2.T, compute_uv=False).sum()
    fid = np.sum((mu1 - mu2) ** 2) + np.sum(a1**2) + np.sum(a2**2) - 2 * trace_sqrt
    return float(max(fid, 0.0))


def kid_from_features(a: np.ndarray, b: np.ndarray, subsets: int = 100, subset_size: int = 1000,
                      seed: int = 0, share: float = 0.5) -> tuple[float, float]:
    """Unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3, mean and std over `subsets` random subsets of m
    pictures from each set (without replacement): m = subset_size, or `share` of the smaller set if less.

    share=1 is NVlabs' KID (their 100 subsets of up to 1000): with at most 1000 pictures every subset is the
    whole set, so the mean is the MMD^2 of the two sets and the std is 0. share=0.5 (fid_lite0's KID) keeps
    subsets that differ, so their spread says how sure the mean is.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if min(len(a), len(b)) < 2:
        raise GenError(f"KID needs at least 2 feature vectors per set, got {len(a)} and {len(b)}")
    m = max(2, min(subset_size, int(len(a) * share), int(len(b) * share)))
    d = a.shape[1]
    rng = np.random.RandomState(seed)

    def kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return (x @ y.T / d + 1.0) ** 3

    values = []
    for _ in range(subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        kxx, kyy = kernel(x, x), kernel(y, y)
        # Unbiased: the within-set means leave out k(x_i, x_i).
        within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        values.append(within - 2 * kernel(x, y).mean())
    return float(np.mean(values)), float(np.std(values))

