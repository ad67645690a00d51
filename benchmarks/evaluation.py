"""Benchmark: ground truth + Recall@N/mAP@N, ours vs the MSLS toolkit's way, same run, same data.

World: N_db random unit database descriptors (2048-d) with UTM positions uniform in a square
sized for ~1.6 database images per 25 m disc; each query is placed 0-15 m from a random database
image and described by a noisy copy of that image's descriptor (planted positives).

Both pipelines rank with the same exact FAISS search (`knn_search`, as GCL's
extract_predictions does), measured once ("knn_faiss_exact"). What is compared is everything after
it:

* ours: cKDTree radius query for the positives (`msls_ground_truth`'s method) + the vectorised
  `recall_at_n`;
* toolkit (mapillary_sls `datasets/msls.py` + `utils/eval.py`, re-implemented with numpy/scipy
  since scikit-learn is not installed and `np.in1d` is gone in numpy 2): brute-force radius search
  (sklearn `NearestNeighbors(algorithm="brute").radius_neighbors` = all pairwise distances, here in
  row chunks with scipy `cdist`), string keys, a string prediction matrix, `pred2gt` re-ordering
  with one `np.where` per query, then per-query Python loops for recall@k and AP@k.

Every line printed is one JSON object; the LAST line is the summary with `ours_s`, `toolkit_s` and
`ratio` = toolkit_s / ours_s (> 1: ours faster), plus end-to-end times including the shared kNN.

    python benchmarks/evaluation.py               # 10,000 queries x 20,000 database, 2048-d
    python benchmarks/evaluation.py --size 0.1    # 1,000 x 2,000 (well under a minute)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.distance import cdist

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gcl_jax.evaluation.knn import knn_search  # noqa: E402
from gcl_jax.evaluation.metrics import recall_at_n  # noqa: E402

FULL_QUERIES = 10_000
DB_PER_QUERY = 2
RADIUS_M = 25.0
KS = (1, 5, 10, 20)


def emit(**record) -> None:
  print(json.dumps(record), flush=True)


def make_world(num_q: int, num_db: int, dim: int, seed: int = 0):
  """Random unit descriptors, UTM positions and planted positives."""
  rng = np.random.default_rng(seed)
  side = np.sqrt(num_db * np.pi * RADIUS_M**2 / 1.6)  # ~1.6 database images per 25 m disc.
  db_utm = rng.uniform(0, side, size=(num_db, 2)) + np.array([500_000.0, 4_000_000.0])
  src = rng.integers(0, num_db, num_q)
  angle = rng.uniform(0, 2 * np.pi, num_q)
  offset = rng.uniform(0, 15.0, num_q)
  q_utm = db_utm[src] + offset[:, None] * np.stack([np.cos(angle), np.sin(angle)], 1)
  db = rng.standard_normal((num_db, dim), dtype=np.float32)
  db /= np.linalg.norm(db, axis=1, keepdims=True)
  noise = rng.standard_normal((num_q, dim), dtype=np.float32)
  noise *= rng.uniform(0.0, 0.3, (num_q, 1)).astype(np.float32)
  q = db[src] + noise
  q /= np.linalg.norm(q, axis=1, keepdims=True)
  return q, db, q_utm, db_utm


def ours(ranked: np.ndarray, q_utm: np.ndarray, db_utm: np.ndarray) -> dict:
  """cKDTree ground truth + vectorised recall_at_n (queries without positive excluded)."""
  hits = cKDTree(db_utm).query_ball_point(q_utm, r=RADIUS_M + 1e-6, return_sorted=True)
  keep = np.array([len(h) > 0 for h in hits])
  positives = [np.asarray(h, np.int64) for h, k in zip(hits, keep) if k]
  return recall_at_n(ranked[keep], positives, KS)


def toolkit(ranked: np.ndarray, q_utm: np.ndarray, db_utm: np.ndarray, chunk: int = 1000) -> dict:
  """The MSLS toolkit's procedure (brute-force radius search, string keys, Python loops)."""
  # msls.py: NearestNeighbors(algorithm='brute').fit(db).radius_neighbors(q, radius=25).
  pos_idx = []
  for start in range(0, len(q_utm), chunk):
    dist = cdist(q_utm[start:start + chunk], db_utm)
    pos_idx += [np.flatnonzero(row <= RADIUS_M) for row in dist]
  db_keys = np.array([f"db{i:07d}" for i in range(len(db_utm))])
  q_keys_all = np.array([f"q{i:07d}" for i in range(len(q_utm))])
  q_idx = [i for i, p in enumerate(pos_idx) if len(p) > 0]  # query_keys_with_no_match dropped.
  query_keys = q_keys_all[q_idx]
  positive_keys = [db_keys[pos_idx[i]] for i in q_idx]
  # The prediction file as the toolkit reads it: one row per query, key then database keys.
  predictions = np.concatenate([q_keys_all[:, None], db_keys[ranked]], axis=1)
  # eval(): re-order predictions to the ground-truth order, one np.where per query key.
  pred_queries = predictions[:, 0:1]
  pred2gt = [np.where(pred_queries == key)[0][0] for key in query_keys]
  preds = predictions[pred2gt, 1:]
  recall = np.zeros(len(KS))
  for qi in range(preds.shape[0]):
    for i, k in enumerate(KS):
      if np.sum(np.isin(preds[qi, :k], positive_keys[qi])) > 0:
        recall[i:] += 1
        break
  recall /= preds.shape[0]

  def apk(pidx, rank, k):
    rank = rank[:k]
    score, num_hits = 0.0, 0.0
    for i, p in enumerate(rank):
      if p in pidx and p not in rank[:i]:
        num_hits += 1.0
        score += num_hits / (i + 1.0)
    return score / min(len(pidx), k)

  metrics = {}
  for i, k in enumerate(KS):
    metrics[f"recall@{k}"] = 100.0 * recall[i]
    metrics[f"map@{k}"] = float(np.mean([apk(list(p), list(r), k)
                                         for p, r in zip(positive_keys, preds)]))
  return metrics


def parse_size(text: str) -> int:
  value = float(text)
  if value <= 0:
    raise argparse.ArgumentTypeError(f"--size must be positive, got {text!r}")
  return max(10, round(value * FULL_QUERIES)) if value <= 1.0 else int(value)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", type=parse_size, default=FULL_QUERIES,
                      help="fraction of 10,000 queries (<= 1) or a number of queries (> 1); the "
                           "database has twice as many images")
  parser.add_argument("--dim", type=int, default=2048)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  num_q, num_db = args.size, DB_PER_QUERY * args.size
  t = time.perf_counter()
  q, db, q_utm, db_utm = make_world(num_q, num_db, args.dim, args.seed)
  emit(measurement="make_world", queries=num_q, database=num_db, dim=args.dim,
       seconds=round(time.perf_counter() - t, 3))

  t = time.perf_counter()
  _, ranked = knn_search(db, q, max(KS))
  knn_s = time.perf_counter() - t
  emit(measurement="knn_faiss_exact", queries=num_q, database=num_db, dim=args.dim, k=max(KS),
       seconds=round(knn_s, 3))

  t = time.perf_counter()
  ours_metrics = ours(ranked, q_utm, db_utm)
  ours_s = time.perf_counter() - t
  emit(measurement="ours_gt_ckdtree_recall_at_n", seconds=round(ours_s, 3), **ours_metrics)

  t = time.perf_counter()
  tk_metrics = toolkit(ranked, q_utm, db_utm)
  toolkit_s = time.perf_counter() - t
  emit(measurement="toolkit_gt_brute_radius_python_loops", seconds=round(toolkit_s, 3),
       **tk_metrics)

  same = all(abs(ours_metrics[key] - tk_metrics[key]) < 1e-9 for key in ours_metrics)
  emit(summary=True, queries=num_q, database=num_db, dim=args.dim, knn_s=round(knn_s, 3),
       ours_s=round(ours_s, 4), toolkit_s=round(toolkit_s, 3), ratio=round(toolkit_s / ours_s, 1),
       ours_end_to_end_s=round(knn_s + ours_s, 3),
       toolkit_end_to_end_s=round(knn_s + toolkit_s, 3),
       ratio_end_to_end=round((knn_s + toolkit_s) / (knn_s + ours_s), 2),
       metrics_identical=same, **{"recall@1": round(ours_metrics["recall@1"], 3)})


if __name__ == "__main__":
  main()
