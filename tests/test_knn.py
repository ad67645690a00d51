"""Tests of the exact FAISS k-NN search: values, tie order, clipping and input checks."""

import numpy as np
import pytest

from gcl_jax.evaluation import knn, knn_search


def test_l2_matches_brute_force_squared_distances():
  rng = np.random.default_rng(1)
  db = rng.normal(size=(200, 16)).astype(np.float32)
  q = rng.normal(size=(30, 16)).astype(np.float32)
  dist, idx = knn_search(db, q, 7)
  assert dist.shape == idx.shape == (30, 7)
  assert dist.dtype == np.float32 and idx.dtype == np.int64
  full = ((q[:, None, :].astype(np.float64) - db[None].astype(np.float64)) ** 2).sum(-1)
  np.testing.assert_array_equal(idx, np.argsort(full, axis=1, kind="stable")[:, :7])
  np.testing.assert_allclose(dist, np.take_along_axis(full, idx, axis=1), rtol=1e-4, atol=1e-4)


def test_ip_ranks_by_decreasing_inner_product():
  rng = np.random.default_rng(2)
  db = rng.normal(size=(50, 8))
  q = rng.normal(size=(5, 8))
  sim, idx = knn_search(db, q, 4, metric="ip")
  np.testing.assert_array_equal(idx, np.argsort(-(q @ db.T), axis=1, kind="stable")[:, :4])
  assert np.all(np.diff(sim, axis=1) <= 0)


def test_equal_distances_are_ordered_by_database_index():
  # Database rows 5, 1, 3 are identical copies of the query; rows 0, 2, 4 are farther, and tied.
  db = np.zeros((6, 3), np.float32)
  db[[0, 2, 4]] = [1.0, 0.0, 0.0]
  db[[1, 3, 5]] = [0.0, 0.0, 0.0]
  q = np.zeros((2, 3), np.float32)
  dist, idx = knn_search(db, q, 6)
  np.testing.assert_array_equal(idx, [[1, 3, 5, 0, 2, 4]] * 2)
  np.testing.assert_array_equal(dist, [[0, 0, 0, 1, 1, 1]] * 2)
  sim, idx_ip = knn_search(db, np.ones((1, 3), np.float32), 6, metric="ip")
  np.testing.assert_array_equal(idx_ip, [[0, 2, 4, 1, 3, 5]])
  np.testing.assert_array_equal(sim, [[1, 1, 1, 0, 0, 0]])


class _ScrambledTiesIndex:
  """Stands in for a FAISS flat index that returns tied neighbours in an arbitrary order."""

  def __init__(self, dim):
    self.dim = dim

  def add(self, x):
    self.n = len(x)

  def search(self, q, k):
    dist = np.array([[0.5, 0.5, 0.5, 2.0, 2.0]] * len(q), np.float32)[:, :k]
    idx = np.array([[4, 0, 2, 3, 1]] * len(q), np.int64)[:, :k]
    return dist, idx


def test_scrambled_faiss_ties_are_re_sorted_stably(monkeypatch):
  monkeypatch.setattr(knn.faiss, "IndexFlatL2", _ScrambledTiesIndex)
  dist, idx = knn_search(np.zeros((5, 2)), np.zeros((2, 2)), 5)
  np.testing.assert_array_equal(idx, [[0, 2, 4, 1, 3]] * 2)
  np.testing.assert_array_equal(dist, [[0.5, 0.5, 0.5, 2.0, 2.0]] * 2)


def test_k_is_clipped_to_the_database_size():
  db = np.eye(3, dtype=np.float32)
  dist, idx = knn_search(db, db, 30)
  assert idx.shape == (3, 3)
  assert (idx >= 0).all()  # Never faiss's -1 filler.
  np.testing.assert_array_equal(idx[:, 0], [0, 1, 2])


def test_float64_and_integer_inputs_are_cast_to_float32():
  dist, idx = knn_search(np.array([[0, 0], [3, 4]]), np.array([[3.0, 4.0]]), 2)
  np.testing.assert_array_equal(idx, [[1, 0]])
  np.testing.assert_array_equal(dist, np.array([[0.0, 25.0]], np.float32))


def test_no_queries_gives_empty_result():
  dist, idx = knn_search(np.eye(4), np.zeros((0, 4)), 2)
  assert dist.shape == idx.shape == (0, 2)


def test_dimension_mismatch_is_rejected():
  with pytest.raises(ValueError, match="dimension mismatch: `db` has D=4, `queries` has D=3"):
    knn_search(np.eye(4), np.zeros((2, 3)), 1)


def test_non_finite_descriptor_names_array_and_first_bad_row():
  db = np.ones((5, 2))
  db[3, 1] = np.nan
  db[4, 0] = np.inf
  with pytest.raises(ValueError, match=r"`db` row 3 has a non-finite value nan at column 1 "
                                       r"\(2 bad row"):
    knn_search(db, np.ones((1, 2)), 1)
  q = np.ones((3, 2))
  q[2, 0] = 1e300
  with pytest.raises(ValueError, match="`queries` row 2 has a float32-overflowing value"):
    knn_search(np.ones((1, 2)), q, 1)


@pytest.mark.parametrize("kwargs, match", [
    ({"k": 0}, "k must be a positive integer"),
    ({"k": 2.5}, "k must be a positive integer"),
    ({"k": 1, "metric": "cosine"}, "metric must be one of"),
])
def test_bad_arguments_are_rejected(kwargs, match):
  with pytest.raises(ValueError, match=match):
    knn_search(np.eye(2), np.eye(2), **kwargs)


def test_bad_shapes_are_rejected():
  with pytest.raises(ValueError, match="`db` must be a 2-D"):
    knn_search(np.ones(3), np.ones((1, 3)), 1)
  with pytest.raises(ValueError, match="`db` is empty"):
    knn_search(np.zeros((0, 3)), np.ones((1, 3)), 1)
