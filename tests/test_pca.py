"""PCA-whitening against the authors' `pcawhitenlearn` / `whitenapply` (golden G9)."""

import json
import pathlib

import numpy as np
import pytest

from gcl_jax.evaluation.pca import learn_pca_whitening

GOLDEN = json.loads((pathlib.Path(__file__).parent / "data" / "golden_pca.json").read_text())
DB = np.asarray(GOLDEN["db"])
Q = np.asarray(GOLDEN["q"])
# G9 query-to-first-two-database distances after whitening (GCL_REFERENCE section 9).
G9_DISTANCES = {
    6: [[1.712519, 1.605427], [1.43382, 1.6715], [1.565485, 1.323283]],
    4: [[1.222015, 1.529682], [1.799689, 1.514017], [1.600166, 1.087747]],
    2: [[0.895614, 1.413821], [1.878365, 1.565948], [1.440303, 0.92925]],
}


def _dist(a, b):
  return np.linalg.norm(np.asarray(a)[:, None, :] - np.asarray(b)[None, :, :], axis=-1)


def test_mean_matches_golden_exactly():
  w = learn_pca_whitening(DB)
  np.testing.assert_allclose(w.mean, GOLDEN["m"], rtol=0, atol=1e-15)
  assert (w.num_fit, w.num_tiny, w.max_dim, w.fit_set) == (40, 0, 6, "train")


@pytest.mark.parametrize("dim", [6, 4, 2])
def test_sign_invariant_distances_match_golden(dim):
  w = learn_pca_whitening(DB, fit_set="eval_database")
  q, db2 = w.apply(Q, dim), w.apply(DB[:2], dim)
  np.testing.assert_allclose(_dist(q, db2), G9_DISTANCES[dim], atol=2e-6)
  # Same distances as the upstream whitened vectors stored in the golden file.
  gold_q = np.asarray(GOLDEN[f"q_whiten_{dim}"])
  gold_db = np.asarray(GOLDEN[f"db_whiten_{dim}_first2"])
  if gold_q.shape[0] != 3:  # Stored as columns upstream (d x N).
    gold_q, gold_db = gold_q.T, gold_db.T
  np.testing.assert_allclose(_dist(q, db2), _dist(gold_q, gold_db), atol=1e-6)
  # Each component equals the upstream one up to its sign.
  np.testing.assert_allclose(np.abs(q), np.abs(gold_q), atol=1e-6)


def test_projection_matches_golden_up_to_row_sign():
  w = learn_pca_whitening(DB)
  gold = np.asarray(GOLDEN["P"])
  signs = np.sign(np.sum(w.projection * gold, axis=1))
  np.testing.assert_allclose(w.projection * signs[:, None], gold, atol=1e-8)


def test_identity_covariance_on_fit_set():
  assert GOLDEN["cov_of_fit_set_after_P_is_identity"]
  w = learn_pca_whitening(DB)
  y = (DB - w.mean) @ w.projection.T
  np.testing.assert_allclose(y.T @ y / len(DB), np.eye(6), atol=1e-10)
  assert w.describe(4) == {"pca_dim": 4, "pca_fit_set": "train", "pca_transductive": False,
                           "pca_num_fit": 40, "pca_num_tiny": 0, "pca_tiny": "drop"}


def test_float16_input_works_unlike_upstream():
  assert GOLDEN["float16_path"].startswith("TypeError: array type float16 is unsupported")
  w16 = learn_pca_whitening(DB.astype(np.float16))
  assert np.isfinite(w16.apply(Q.astype(np.float16), 6)).all()


def test_near_zero_eigenvalues_are_dropped_or_clipped():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(5, 8))  # N <= D: rank 4, so four eigenvalues are (numerically) zero.
  x /= np.linalg.norm(x, axis=1, keepdims=True)
  dropped = learn_pca_whitening(x)
  assert (dropped.num_tiny, dropped.max_dim) == (4, 4)
  y = dropped.apply(x)
  assert np.isfinite(y).all() and np.allclose(np.linalg.norm(y, axis=1), 1.0, atol=1e-5)
  with pytest.raises(ValueError, match=r"dim must be an integer in \[1, 4\].*got 8"):
    dropped.apply(x, 8)
  clipped = learn_pca_whitening(x, tiny="clip")
  assert clipped.max_dim == 8 and np.abs(clipped.projection).max() < 1e6
  # The informative components are the same whichever policy is chosen.
  np.testing.assert_allclose(np.abs(clipped.projection[:4]), np.abs(dropped.projection),
                             atol=1e-8)


def test_input_errors():
  with pytest.raises(ValueError, match="fit_set must be one of"):
    learn_pca_whitening(DB, fit_set="test")
  with pytest.raises(ValueError, match=r"N >= 2, got shape \(1, 6\)"):
    learn_pca_whitening(DB[:1])
  with pytest.raises(ValueError, match="constant"):
    learn_pca_whitening(np.ones((4, 3)))
  bad = DB.copy()
  bad[7, 2] = np.nan
  with pytest.raises(ValueError, match="fit set row 7"):
    learn_pca_whitening(bad)
  with pytest.raises(ValueError, match=r"x must have shape \(N, 6\)"):
    learn_pca_whitening(DB).apply(Q[:, :5])


def test_whiten_cities_applies_one_whitening_to_both_sides():
  from gcl_jax.types import ImageTable
  from gcl_jax.evaluation.pca import whiten_cities
  from gcl_jax.evaluation.protocols import CityEval

  def table(n, name):
    return ImageTable(root="/r", name=name, paths=np.array([f"{i}.jpg" for i in range(n)]),
                      keys=np.array([str(i) for i in range(n)]), utm=np.zeros((n, 2)),
                      heading=np.zeros(n), pano=np.zeros(n, bool), night=np.zeros(n, bool),
                      in_all=np.ones(n, bool))

  city = CityEval(table(3, "q"), table(40, "db"), Q, DB, name="c")
  w = learn_pca_whitening(DB, fit_set="eval_database")
  (out,) = whiten_cities([city], w, 4)
  assert out.q_desc.shape == (3, 4) and out.db_desc.shape == (40, 4) and out.name == "c"
  np.testing.assert_allclose(_dist(out.q_desc, out.db_desc[:2]), G9_DISTANCES[4], atol=2e-6)
  assert w.describe(4)["pca_transductive"]
