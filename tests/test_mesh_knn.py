"""Exact k-NN on the 8-device CPU mesh against FAISS (knn_search)."""

import jax
import numpy as np
import pytest

from gcl_jax.evaluation.knn import knn_search
from gcl_jax.evaluation.mesh_knn import mesh_knn
from gcl_jax.parallel import make_mesh


def _data(num_db=1003, num_q=37, dim=16, seed=0):
  rng = np.random.default_rng(seed)
  db = rng.normal(size=(num_db, dim)).astype(np.float32)
  db /= np.linalg.norm(db, axis=1, keepdims=True)
  # Exact ties: copies of rows 5 and 700 at higher indices, spread over several devices.
  q = rng.normal(size=(num_q, dim)).astype(np.float32)
  if num_db > 1000:
    db[[120, 640, 999]] = db[5]
    db[[701, 702]] = db[700]
    q[:4] = db[[5, 700, 5, 3]] + 1e-3 * rng.normal(size=(4, dim))
  return db, q


@pytest.fixture(scope="module")
def mesh():
  assert len(jax.devices()) == 8
  return make_mesh()


@pytest.mark.parametrize("metric", ["l2", "ip"])
@pytest.mark.parametrize("block", [16, 4096])
def test_same_neighbours_as_faiss(mesh, metric, block):
  db, q = _data()
  want_d, want_i = knn_search(db, q, 10, metric=metric)
  got_d, got_i = mesh_knn(db, q, 10, mesh, block=block, metric=metric)
  np.testing.assert_array_equal(got_i, want_i)
  np.testing.assert_allclose(got_d, want_d, atol=1e-5)
  # The tied copies come in increasing index order.
  assert got_i[0, :4].tolist() == [5, 120, 640, 999]
  assert got_i[1, :3].tolist() == [700, 701, 702]


def test_k_larger_than_database_and_shards_with_padding(mesh):
  db, q = _data(num_db=11, num_q=5)  # Fewer rows than devices x block; most devices hold padding.
  db[[9]] = db[2]
  want_d, want_i = knn_search(db, q, 50)
  got_d, got_i = mesh_knn(db, q, 50, mesh, block=1)
  assert got_i.shape == (5, 11) and sorted(got_i[0].tolist()) == list(range(11))
  np.testing.assert_array_equal(got_i, want_i)
  np.testing.assert_allclose(got_d, want_d, atol=1e-5)


def test_smaller_mesh_and_no_queries():
  db, q = _data(num_db=100, num_q=3)
  got = mesh_knn(db, q, 7, make_mesh(2), block=8)
  np.testing.assert_array_equal(got[1], knn_search(db, q, 7)[1])
  d, i = mesh_knn(db, q[:0], 7, make_mesh(2))
  assert d.shape == i.shape == (0, 7)


def test_input_errors(mesh):
  db, q = _data(num_db=20, num_q=2)
  with pytest.raises(ValueError, match="metric must be one of"):
    mesh_knn(db, q, 3, mesh, metric="cos")
  with pytest.raises(ValueError, match="block must be a positive integer, got 0"):
    mesh_knn(db, q, 3, mesh, block=0)
  with pytest.raises(ValueError, match="dimension mismatch"):
    mesh_knn(db, q[:, :8], 3, mesh)
  with pytest.raises(ValueError, match="mesh has no axis 'model'"):
    mesh_knn(db, q, 3, mesh, axis="model")
  bad = db.copy()
  bad[4, 1] = np.inf
  with pytest.raises(ValueError, match="`db` row 4"):
    mesh_knn(bad, q, 3, mesh)


@pytest.mark.parametrize("index,options", [("ivf", {"nlist": 16, "nprobe": 16}),
                                           ("hnsw", {"ef_search": 256})])
def test_approximate_index_reports_recall_against_exact(index, options):
  db, q = _data(num_db=2000, num_q=50)
  d, i, recall = knn_search(db, q, 10, index=index, index_options=options, check_recall=True)
  exact_d, exact_i = knn_search(db, q, 10)
  overlap = np.mean([np.intersect1d(a, b).size / 10 for a, b in zip(i, exact_i)])
  assert recall == pytest.approx(overlap)
  # nprobe = nlist visits every list, so IVF is exact; HNSW with a wide beam is near-exact.
  assert recall == 1.0 if index == "ivf" else recall >= 0.95
  if index == "ivf":
    np.testing.assert_array_equal(i, exact_i)
    np.testing.assert_allclose(d, exact_d, atol=1e-5)
  assert knn_search(db, q, 10, check_recall=True)[2] == 1.0


def test_approximate_index_recall_drops_when_probing_one_list():
  db, q = _data(num_db=2000, num_q=50)
  _, _, recall = knn_search(db, q, 10, index="ivf", index_options={"nlist": 64, "nprobe": 1},
                            check_recall=True)
  assert 0.0 < recall < 1.0


def test_approximate_index_errors():
  db, q = _data(num_db=50, num_q=2)
  with pytest.raises(ValueError, match="index must be one of"):
    knn_search(db, q, 3, index="lsh")
  with pytest.raises(ValueError, match=r"unknown hnsw index option\(s\) \['nprobe'\]"):
    knn_search(db, q, 3, index="hnsw", index_options={"nprobe": 3})
  with pytest.raises(ValueError, match=r"nlist must be in \[1, 50\].*got 99"):
    knn_search(db, q, 3, index="ivf", index_options={"nlist": 99})
  with pytest.raises(ValueError, match="need index='ivf' or 'hnsw'"):
    knn_search(db, q, 3, index_options={"nlist": 4})


def test_database_already_sharded_on_the_mesh(mesh):
  from jax.sharding import NamedSharding, PartitionSpec as P
  db, q = _data(num_db=203, num_q=9)  # 203 = not a multiple of 8: padded on the devices.
  db_dev = jax.device_put(db[:200], NamedSharding(mesh, P("data")))
  got_d, got_i = mesh_knn(db_dev, q, 6, mesh, block=7)  # 25 rows per shard: partial last block.
  want_d, want_i = knn_search(db[:200], q, 6)
  np.testing.assert_array_equal(got_i, want_i)
  np.testing.assert_allclose(got_d, want_d, atol=1e-5)
  got = mesh_knn(jax.numpy.asarray(db), q, 6, mesh, block=7)
  np.testing.assert_array_equal(got[1], knn_search(db, q, 6)[1])
  bad = db.copy()
  bad[17, 0] = np.nan
  with pytest.raises(ValueError, match="`db` row 17 has a non-finite value"):
    mesh_knn(jax.numpy.asarray(bad), q, 3, mesh)
