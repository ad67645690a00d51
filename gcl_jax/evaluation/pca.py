"""PCA-whitening of descriptors with the authors' formulas (GCL `apply_pca.py`, cirtorch recipe).

Learn (`pcawhitenlearn`), on a fit set X of N descriptors (rows here, columns upstream):

    m = mean of X;  Xc = X - m;  C = (Xc^T Xc + (Xc^T Xc)^T) / (2N)
    C = V diag(lambda) V^T, eigenvalues sorted descending;  P = diag(lambda^-1/2) V^T

Apply (`whitenapply`): y = P[:d] (x - m), then y / (||y|| + 1e-6).

Differences from upstream, all documented choices:

* `np.linalg.eigh` (symmetric solver, float64) instead of `np.linalg.eig`: same eigenpairs up to
  the sign of each eigenvector (LAPACK-dependent upstream too), which flips the sign of one
  whitened component and leaves every distance unchanged. Inputs are cast to float64 (upstream's
  float16 path raises `TypeError: array type float16 is unsupported in linalg`).
* Near-zero eigenvalues: upstream divides by sqrt(lambda) whatever lambda is, so a rank-deficient
  fit set (N <= D, duplicated descriptors, a dead channel) blows up. Here an eigenvalue is "tiny"
  when lambda <= rel_floor * lambda_max (default 1e-10). `tiny="drop"` (default) removes those
  components (they come last in the order, so P has fewer rows and asking for more dimensions
  raises); `tiny="clip"` keeps them with lambda raised to the floor. Neither changes a full-rank
  fit, so the golden values are reproduced exactly.
* The fit set is a choice recorded in the result: "train" (training descriptors, the default and
  the non-transductive choice) or "eval_database" (the authors' transductive choice: the
  evaluation database itself, all MSLS cities of the split concatenated).

Typical use:

    w = learn_pca_whitening(train_desc)                       # or, as the authors:
    w = learn_pca_whitening(np.concatenate([c.db_desc for c in cities]), fit_set="eval_database")
    result, _ = evaluate_retrieval(whiten_cities(cities, w, 1024))
    result.update(w.describe(1024))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from gcl_jax.evaluation.protocols import CityEval

FIT_SETS = ("train", "eval_database")
_TINY = ("drop", "clip")
NORM_EPS = 1e-6  # Added to the L2 norm after projection, as upstream (||y|| + 1e-6).


@dataclasses.dataclass(frozen=True)
class PCAWhitening:
  """A learned PCA-whitening.

  Attributes:
    mean: (D,) float64 mean of the fit set.
    projection: (K, D) float64 whitening matrix P, rows by decreasing eigenvalue (K <= D: tiny
      components removed under tiny="drop").
    eigenvalues: (D,) float64 eigenvalues of C, descending (before any clipping).
    fit_set: "train" or "eval_database" (transductive).
    num_fit: number of descriptors in the fit set.
    num_tiny: eigenvalues at or below the floor (dropped or clipped).
    tiny: "drop" or "clip".
  """

  mean: np.ndarray
  projection: np.ndarray
  eigenvalues: np.ndarray
  fit_set: str
  num_fit: int
  num_tiny: int
  tiny: str

  @property
  def max_dim(self) -> int:
    """The largest output dimension available."""
    return int(self.projection.shape[0])

  def apply(self, x: np.ndarray, dim: int | None = None) -> np.ndarray:
    """Whitens and L2-normalizes descriptors: y = P[:dim](x - m), y / (||y|| + 1e-6).

    Args:
      x: (N, D) descriptors.
      dim: output dimension (default: all available components).

    Returns:
      (N, dim) float32 descriptors.

    Raises:
      ValueError: wrong shape, non-finite values, or dim outside [1, max_dim].
    """
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or x.shape[1] != self.mean.shape[0]:
      raise ValueError(f"x must have shape (N, {self.mean.shape[0]}), got {x.shape}")
    if not np.isfinite(x).all():
      row = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
      raise ValueError(f"x row {row} has non-finite values")
    dim = self.max_dim if dim is None else dim
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or not (
        1 <= dim <= self.max_dim):
      raise ValueError(f"dim must be an integer in [1, {self.max_dim}] (components available: "
                       f"{self.max_dim} of {self.mean.shape[0]}, {self.num_tiny} tiny "
                       f"{'dropped' if self.tiny == 'drop' else 'clipped'}), got {dim!r}")
    y = (x - self.mean) @ self.projection[:dim].T
    y /= np.linalg.norm(y, axis=1, keepdims=True) + NORM_EPS
    return y.astype(np.float32)

  def describe(self, dim: int | None = None) -> dict:
    """Labels to merge into a result dict (says which set the whitening was learned on)."""
    return {"pca_dim": self.max_dim if dim is None else int(dim), "pca_fit_set": self.fit_set,
            "pca_transductive": self.fit_set == "eval_database", "pca_num_fit": self.num_fit,
            "pca_num_tiny": self.num_tiny, "pca_tiny": self.tiny}


def learn_pca_whitening(x: np.ndarray, *, fit_set: str = "train", tiny: str = "drop",
                        rel_floor: float = 1e-10) -> PCAWhitening:
  """Learns the authors' PCA-whitening on the rows of `x`.

  Args:
    x: (N, D) fit-set descriptors, N >= 2.
    fit_set: "train" (training descriptors) or "eval_database" (the evaluation database: the
      authors' transductive choice). Only labels the result.
    tiny: "drop" or "clip" the components whose eigenvalue is <= rel_floor * lambda_max.
    rel_floor: relative eigenvalue floor, in (0, 1).

  Returns:
    The learned PCAWhitening.

  Raises:
    ValueError: bad shape, non-finite values, a constant fit set, or an unknown option.
  """
  if fit_set not in FIT_SETS:
    raise ValueError(f"fit_set must be one of {FIT_SETS}, got {fit_set!r}")
  if tiny not in _TINY:
    raise ValueError(f"tiny must be one of {_TINY}, got {tiny!r}")
  if not (0.0 < rel_floor < 1.0):
    raise ValueError(f"rel_floor must be in (0, 1), got {rel_floor!r}")
  x = np.asarray(x, np.float64)
  if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
    raise ValueError(f"x must be a (N, D) fit set with N >= 2, got shape {x.shape}")
  if not np.isfinite(x).all():
    row = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
    raise ValueError(f"fit set row {row} has non-finite values")
  n = x.shape[0]
  mean = x.mean(axis=0)
  xc = x - mean
  gram = xc.T @ xc
  cov = (gram + gram.T) / (2 * n)
  eigenvalues, vectors = np.linalg.eigh(cov)
  order = np.argsort(eigenvalues)[::-1]
  eigenvalues, vectors = eigenvalues[order], vectors[:, order]
  if eigenvalues[0] <= 0:
    raise ValueError(f"the fit set ({n} descriptors) is constant: its covariance is zero")
  floor = rel_floor * eigenvalues[0]
  is_tiny = eigenvalues <= floor
  if tiny == "drop":
    kept = ~is_tiny
    projection = vectors[:, kept].T / np.sqrt(eigenvalues[kept])[:, None]
  else:
    projection = vectors.T / np.sqrt(np.maximum(eigenvalues, floor))[:, None]
  return PCAWhitening(mean=mean, projection=projection, eigenvalues=eigenvalues, fit_set=fit_set,
                      num_fit=n, num_tiny=int(is_tiny.sum()), tiny=tiny)


def whiten_cities(cities: Sequence[CityEval], whitening: PCAWhitening,
                  dim: int | None = None) -> list[CityEval]:
  """The cities with queries and database whitened by the same (m, P[:dim]), as upstream."""
  return [dataclasses.replace(c, q_desc=whitening.apply(c.q_desc, dim),
                              db_desc=whitening.apply(c.db_desc, dim)) for c in cities]
