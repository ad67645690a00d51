"""benchmarks/index.py runs end to end at the tiny size: one line per index type, then a summary
with the recall of each type against exact search."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_index_benchmark_smoke():
  out = subprocess.run(
      [sys.executable, os.path.join(REPO, "benchmarks", "index.py"), "--size=tiny",
       "--num_database=600", "--dims=16", "--num_queries=20", "--single_queries=5",
       "--pq_nbits=6"],
      capture_output=True, text=True, check=True, timeout=600)
  lines = [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]
  summary = lines[-1]
  assert summary["summary"] and summary["size"] == "tiny"
  rows = {l["name"]: l for l in lines if l.get("name") in ("flat", "ivf", "hnsw", "ivfpq")}
  assert set(rows) == {"flat", "ivf", "hnsw", "ivfpq"}
  assert rows["flat"]["recall@1"] == rows["flat"]["recall@10"] == 1.0  # exact is the reference
  for row in rows.values():
    assert row["num_database"] == 600 and row["dim"] == 16 and row["num_queries"] == 20
    assert row["flat_float32_bytes"] == 600 * 16 * 4 and row["disk_bytes"] > 0
    assert 0.0 <= row["recall@1"] <= 1.0 and 0.0 <= row["recall@10"] <= 1.0
  assert rows["flat"]["disk_bytes"] >= 600 * 16 * 4 > rows["ivfpq"]["disk_bytes"]
  result = summary["results"]["600x16"]
  assert set(result) == {"flat", "ivf", "hnsw", "ivfpq", "flat_float32_mb"}
  assert result["flat"]["ratio"] == 1.0
