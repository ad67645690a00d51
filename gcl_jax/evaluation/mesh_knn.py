"""Exact k-NN on the device mesh, for databases too large for one host's FAISS index.

The database is sharded along the mesh axis `data` (row blocks, device d holding the contiguous
rows [d * S, (d + 1) * S)); the queries are replicated. A database given as a jax.Array (e.g.
assembled from per-host shards with `jax.make_array_from_process_local_data`) stays on the
devices: only the (N_q x k) result comes back to the host. Each device walks its shard in blocks of
`block` rows: one (Q x block) matmul, a top-k of the block, and a merge with the running top-k
(`jax.lax.top_k` of the concatenation). The per-device top-k lists are then all-gathered and
merged once more. Only (Q x block) scores and (Q x k) candidates are alive per device at any time.

Tie order matches `knn.knn_search`: equal scores are ordered by increasing database index.
`jax.lax.top_k` is stable (the lower position wins a tie), and every concatenation puts lower
database indices first (running list before the new block, device d before device d + 1), so
among tied candidates the lowest indices are kept at the cut-off as well; the result is re-sorted
on the host with the same lexsort as `knn_search`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from gcl_jax.evaluation.knn import _as_descriptors

_METRICS = ("l2", "ip")


@functools.lru_cache(maxsize=32)
def _build(mesh: jax.sharding.Mesh, axis: str, num_db: int, per_device: int, block: int, k: int,
           metric: str):
  """Jitted shard_map computing the global top-k (scores: larger is better)."""
  num_blocks = -(-per_device // block)
  block_k = min(k, block)

  def local(db_local, queries):
    base = jax.lax.axis_index(axis) * per_device
    # The last block of a shard may be partial: pad the shard (rows past `per_device` are masked).
    db_local = jnp.pad(db_local, ((0, num_blocks * block - per_device), (0, 0)))
    q_sq = jnp.sum(queries * queries, axis=1)
    init = (jnp.full((queries.shape[0], k), -jnp.inf, jnp.float32),
            jnp.full((queries.shape[0], k), -1, jnp.int32))

    def body(b, carry):
      vals, idx = carry
      x = jax.lax.dynamic_slice_in_dim(db_local, b * block, block, axis=0)
      dots = jnp.matmul(queries, x.T, precision=jax.lax.Precision.HIGHEST)
      if metric == "l2":  # Score = -squared distance, as FAISS computes it: |q|^2 + |x|^2 - 2 q.x.
        scores = -(q_sq[:, None] + jnp.sum(x * x, axis=1)[None, :] - 2.0 * dots)
      else:
        scores = dots
      local_idx = b * block + jnp.arange(block, dtype=jnp.int32)
      gidx = base + local_idx
      valid = (local_idx < per_device) & (gidx < num_db)
      scores = jnp.where(valid[None, :], scores, -jnp.inf)
      bvals, bpos = jax.lax.top_k(scores, block_k)
      cat_vals = jnp.concatenate([vals, bvals], axis=1)
      cat_idx = jnp.concatenate([idx, gidx[bpos]], axis=1)
      vals, pos = jax.lax.top_k(cat_vals, k)
      return vals, jnp.take_along_axis(cat_idx, pos, axis=1)

    vals, idx = jax.lax.fori_loop(0, num_blocks, body, init)
    all_vals = jax.lax.all_gather(vals, axis, axis=1, tiled=True)
    all_idx = jax.lax.all_gather(idx, axis, axis=1, tiled=True)
    vals, pos = jax.lax.top_k(all_vals, k)
    return vals, jnp.take_along_axis(all_idx, pos, axis=1)

  fn = jax.shard_map(local, mesh=mesh, in_specs=(P(axis), P()), out_specs=(P(), P()),
                     check_vma=False)
  return jax.jit(fn)


def _place_database(db, mesh: jax.sharding.Mesh, axis: str) -> tuple[jax.Array, int]:
  """Database rows sharded along `axis` (padded to a multiple of the axis size); real row count."""
  num_dev = mesh.shape[axis]
  sharding = NamedSharding(mesh, P(axis))
  if isinstance(db, jax.Array):  # Possibly already sharded, possibly spanning several hosts.
    if db.ndim != 2:
      raise ValueError(f"`db` must be a 2-D (N, D) descriptor array, got shape {db.shape}")
    num_db = db.shape[0]
    pad = -num_db % num_dev
    db = jax.jit(lambda x: jnp.pad(x.astype(jnp.float32), ((0, pad), (0, 0))),
                 out_shardings=sharding)(db)
    finite = jax.jit(lambda x: jnp.isfinite(x).all(axis=1))(db)
    if not bool(jax.device_get(jnp.all(finite))):
      row = int(jax.device_get(jnp.argmin(finite)))
      raise ValueError(f"`db` row {row} has a non-finite value")
    return db, num_db
  host = _as_descriptors("db", np.asarray(db))
  num_db = host.shape[0]
  padded = np.zeros((num_db + (-num_db % num_dev), host.shape[1]), np.float32)
  padded[:num_db] = host
  return jax.make_array_from_callback(padded.shape, sharding, lambda idx: padded[idx]), num_db


def mesh_knn(db, queries, k: int, mesh: jax.sharding.Mesh, block: int = 4096, metric: str = "l2",
             axis: str = "data") -> tuple[np.ndarray, np.ndarray]:
  """Exact k-NN with the database sharded over `mesh` (same contract as `knn.knn_search`).

  Args:
    db: (N_db, D) database descriptors (cast to float32): a host numpy array, or a jax.Array
      (e.g. already sharded along `axis`, possibly over several hosts: it never has to fit on one
      host). It is padded to a multiple of the axis size and laid out with
      NamedSharding(mesh, P(axis)); padded rows are masked out.
    queries: (N_q, D) query descriptors (host array, the same on every host), replicated on every
      device.
    k: neighbours wanted; clipped to N_db.
    mesh: device mesh with axis `axis`.
    block: database rows scored per matmul on each device (memory: N_q x block floats).
    metric: "l2" (squared Euclidean, ascending) or "ip" (inner product, descending).
    axis: mesh axis the database is sharded along.

  Returns:
    (distances, indices): (N_q, min(k, N_db)) float32 and int64 numpy arrays, best first, equal
    scores ordered by increasing database index.

  Raises:
    ValueError: unknown metric or axis, k or block < 1, empty database, dimension mismatch, or
      non-finite values.
  """
  if metric not in _METRICS:
    raise ValueError(f"metric must be one of {_METRICS}, got {metric!r}")
  if axis not in mesh.axis_names:
    raise ValueError(f"mesh has no axis {axis!r} (axes: {mesh.axis_names})")
  for name, value in (("k", k), ("block", block)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
      raise ValueError(f"{name} must be a positive integer, got {value!r}")
  queries = _as_descriptors("queries", np.asarray(queries))
  db_dev, num_db = _place_database(db, mesh, axis)
  if num_db == 0:
    raise ValueError("`db` is empty (0 rows): nothing to search")
  if db_dev.shape[1] != queries.shape[1]:
    raise ValueError(f"descriptor dimension mismatch: `db` has D={db_dev.shape[1]}, `queries` has "
                     f"D={queries.shape[1]}")
  k = int(min(k, num_db))
  if queries.shape[0] == 0:
    return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
  per_device = db_dev.shape[0] // mesh.shape[axis]
  block = int(min(block, per_device))
  q_dev = jax.make_array_from_callback(queries.shape, NamedSharding(mesh, P()),
                                       lambda idx: queries[idx])
  fn = _build(mesh, axis, num_db, per_device, block, k, metric)
  vals, idx = jax.device_get(fn(db_dev, q_dev))
  vals = np.asarray(vals, np.float32)
  idx = np.asarray(idx, np.int64)
  distances = -vals if metric == "l2" else vals
  primary = distances if metric == "l2" else -distances
  order = np.lexsort((idx, primary), axis=1)
  return np.take_along_axis(distances, order, 1), np.take_along_axis(idx, order, 1)
