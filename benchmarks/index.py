"""Place-index types on large synthetic databases: build time, size, query latency, recall.

For each database size and descriptor dimension, builds every index type of
`gcl_jax.localize.index` (flat = exact, ivf, hnsw, ivfpq) with the parameters of --mode=export
(config.export defaults unless overridden here) over synthetic descriptors, and measures:

  build_s            time to train (IVF k-means, PQ codebooks) and fill the index
  disk_bytes         size of the serialized index (the index.faiss file of an export)
  memory_bytes       resident memory added by the built index (RSS after build minus before;
                     less than the index holds when it reuses pages of an index freed before)
  flat_float32_bytes what a float32 flat index needs: N * D * 4
  batch_ms_per_query query latency per image, searching all queries in one call
  single_ms_per_query query latency per image, one query per call (a photo at a time)
  recall@1, recall@10  fraction of the exact search's top-1 / top-10 found by the index's top-1 /
                     top-10 (mean over queries; 1.0 for flat)

Synthetic descriptors: L2-normalized Gaussian clusters (places: `--per_cluster` images around each
of N / per_cluster random centres, noise `--noise`), queries are new noisy views of database
images, so nearest neighbours are meaningful (not uniform noise, where every index fails alike).

Each line is one JSON object; the last is a summary with, per (size, dim), the recall and latency
of each type and `ratio` = exact (flat) latency / the type's latency (> 1: faster than exact).

    python benchmarks/index.py --size=tiny     # seconds (tests)
    python benchmarks/index.py --size=quick    # under a minute
    python benchmarks/index.py                 # 100k database, 2048-d and 256-d
    python benchmarks/index.py --num_database=1000000 --dims=256 --num_queries=200
    python benchmarks/index.py --num_database=1000000 --dims=2048 --num_queries=200 \
        --single_queries=20 --ivf_train_size=128000   # 16 GiB of memory, ~70 min on 2 cores
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import faiss  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from gcl_jax.localize import index as index_lib  # pylint: disable=wrong-import-position

SIZES = {  # --size presets: database sizes, dimensions, queries, single-query timings
    "tiny": dict(num_database=(2000,), dims=(32,), num_queries=50, single_queries=10),
    "quick": dict(num_database=(20000,), dims=(256,), num_queries=200, single_queries=50),
    "full": dict(num_database=(100000,), dims=(2048, 256), num_queries=1000,
                 single_queries=100),
}

FLAGS = flags.FLAGS
flags.DEFINE_enum("size", "full", list(SIZES), "Preset of sizes (overridden by the flags below).")
flags.DEFINE_list("num_database", None, "Database sizes (default: the preset's).")
flags.DEFINE_list("dims", None, "Descriptor dimensions (default: the preset's).")
flags.DEFINE_integer("num_queries", None, "Queries per measurement (default: the preset's).")
flags.DEFINE_integer("single_queries", None, "Queries timed one per call (default: preset's).")
flags.DEFINE_list("types", list(index_lib.INDEX_TYPES), "Index types measured.")
flags.DEFINE_integer("per_cluster", 20, "Database images per synthetic place (cluster).")
flags.DEFINE_float("noise", 1.0, "Noise of an image around its place, relative to the spread of "
                   "the places (per dimension, before normalization).")
flags.DEFINE_integer("ivf_nlist", 0, "IVF lists (0: round(4 sqrt(N)), as config.export).")
flags.DEFINE_integer("ivf_nprobe", 16, "IVF lists searched (config.export.ivf_nprobe).")
flags.DEFINE_integer("ivf_train_size", 0, "IVF / PQ training sample (0: 256 per list, as "
                     "config.export.ivf_train_size).")
flags.DEFINE_integer("hnsw_m", 32, "HNSW links per node (config.export.hnsw_m).")
flags.DEFINE_integer("hnsw_ef_construction", 80, "HNSW build beam (config.export).")
flags.DEFINE_integer("hnsw_ef_search", 128, "HNSW search beam (config.export.hnsw_ef_search).")
flags.DEFINE_integer("pq_m", 0, "PQ sub-quantizers (0: largest divisor of D <= D / 16).")
flags.DEFINE_integer("pq_nbits", 8, "Bits per PQ code (config.export.pq_nbits).")
flags.DEFINE_integer("threads", 0, "FAISS OpenMP threads (0: FAISS's default).")
flags.DEFINE_integer("seed", 0, "Seed of the synthetic descriptors.")


def synthetic_descriptors(n: int, dim: int, num_queries: int, per_cluster: int, noise: float,
                          seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(database (n, dim), queries (num_queries, dim)) float32, L2-normalized, clustered."""
  rng = np.random.default_rng(seed)
  num_clusters = max(1, n // per_cluster)
  centres = rng.standard_normal((num_clusters, dim), dtype=np.float32)
  db = np.empty((n, dim), np.float32)
  chunk = 50000
  for start in range(0, n, chunk):
    stop = min(n, start + chunk)
    x = centres[np.arange(start, stop) % num_clusters]
    x += noise * rng.standard_normal((stop - start, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    db[start:stop] = x
  src = rng.choice(n, num_queries, replace=False)
  q = centres[src % num_clusters] + noise * rng.standard_normal((num_queries, dim),
                                                                 dtype=np.float32)
  q /= np.linalg.norm(q, axis=1, keepdims=True)
  return db, q.astype(np.float32)


def rss_bytes() -> int:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def serialized_bytes(index) -> int:
  """Size of the index.faiss file of `index`, counted as FAISS writes it (no copy in memory)."""
  size = 0

  def count(chunk: bytes) -> None:
    nonlocal size
    size += len(chunk)

  faiss.write_index(index, faiss.PyCallbackIOWriter(count))
  return size


def recall_vs_exact(found: np.ndarray, exact: np.ndarray, k: int) -> float:
  hits = [np.intersect1d(a[:k][a[:k] >= 0], e[:k]).size for a, e in zip(found, exact)]
  return float(np.mean(hits) / k)


def measure(kind: str, db: np.ndarray, queries: np.ndarray, exact: np.ndarray | None,
            single: int) -> tuple[dict, np.ndarray]:
  n, dim = db.shape
  params = index_lib.index_params(
      kind, n, dim, nlist=FLAGS.ivf_nlist, nprobe=FLAGS.ivf_nprobe, hnsw_m=FLAGS.hnsw_m,
      ef_construction=FLAGS.hnsw_ef_construction, ef_search=FLAGS.hnsw_ef_search,
      pq_m=FLAGS.pq_m, pq_nbits=FLAGS.pq_nbits, train_size=FLAGS.ivf_train_size)
  rss0 = rss_bytes()
  t0 = time.perf_counter()
  index = index_lib.build_faiss_index(db, kind, params, seed=FLAGS.seed)
  build_s = time.perf_counter() - t0
  memory = max(0, rss_bytes() - rss0)
  disk = serialized_bytes(index)
  index_lib.sorted_search(index, queries[:2], 10)  # warm-up
  t0 = time.perf_counter()
  _, found = index_lib.sorted_search(index, queries, 10)
  batch_ms = (time.perf_counter() - t0) * 1000 / len(queries)
  t0 = time.perf_counter()
  for i in range(single):
    index_lib.sorted_search(index, queries[i:i + 1], 10)
  single_ms = (time.perf_counter() - t0) * 1000 / max(single, 1)
  exact = found if exact is None else exact
  row = {"name": kind, "num_database": n, "dim": dim, "num_queries": len(queries),
         "params": params, "build_s": round(build_s, 3), "disk_bytes": disk,
         "memory_bytes": int(memory), "flat_float32_bytes": n * dim * 4,
         "batch_ms_per_query": round(batch_ms, 4), "single_ms_per_query": round(single_ms, 4),
         "recall@1": round(recall_vs_exact(found, exact, 1), 4),
         "recall@10": round(recall_vs_exact(found, exact, 10), 4)}
  del index
  return row, found


def main(argv):
  del argv
  preset = SIZES[FLAGS.size]
  sizes = [int(s) for s in (FLAGS.num_database or preset["num_database"])]
  dims = [int(d) for d in (FLAGS.dims or preset["dims"])]
  num_queries = FLAGS.num_queries or preset["num_queries"]
  single = min(FLAGS.single_queries if FLAGS.single_queries is not None
               else preset["single_queries"], num_queries)
  if FLAGS.threads:
    faiss.omp_set_num_threads(FLAGS.threads)
  types = ["flat"] + [t for t in FLAGS.types if t != "flat"]  # exact first: the reference
  summary = {"summary": True, "size": FLAGS.size, "threads": faiss.omp_get_max_threads(),
             "results": {}}
  for n in sizes:
    for dim in dims:
      t0 = time.perf_counter()
      db, queries = synthetic_descriptors(n, dim, num_queries, FLAGS.per_cluster, FLAGS.noise,
                                          FLAGS.seed)
      print(json.dumps({"name": "data", "num_database": n, "dim": dim,
                        "num_queries": num_queries,
                        "generate_s": round(time.perf_counter() - t0, 2)}), flush=True)
      exact, rows = None, {}
      for kind in types:
        row, found = measure(kind, db, queries, exact, single)
        if kind == "flat":
          exact = found
        rows[kind] = row
        print(json.dumps(row), flush=True)
      flat = rows["flat"]
      summary["results"][f"{n}x{dim}"] = {
          kind: {"recall@1": r["recall@1"], "recall@10": r["recall@10"],
                 "build_s": r["build_s"], "disk_mb": round(r["disk_bytes"] / 2**20, 1),
                 "single_ms_per_query": r["single_ms_per_query"],
                 "ratio": round(flat["single_ms_per_query"] / max(r["single_ms_per_query"],
                                                                  1e-9), 2)}
          for kind, r in rows.items()}
      summary["results"][f"{n}x{dim}"]["flat_float32_mb"] = round(n * dim * 4 / 2**20, 1)
      del db, queries
  print(json.dumps(summary), flush=True)


if __name__ == "__main__":
  app.run(main)
