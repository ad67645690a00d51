"""benchmarks/input_pipeline.py runs end to end (stand-in reference, tiny sizes) and reports a
ratio per source size."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_input_pipeline_benchmark_smoke():
  out = subprocess.run(
      [sys.executable, os.path.join(REPO, "benchmarks", "input_pipeline.py"), "--size=8",
       "--repeats=1", "--batch_size=4", "--workers=2", "--torch_python=", "--sources=96x64,64x48",
       "--variants=pil_uint8,pil", "--fast_decode_images=0"],
      capture_output=True, text=True, check=True, timeout=600)
  lines = [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]
  summary = lines[-1]
  assert summary["summary"] and summary["headline"] == "pil_uint8"
  assert set(summary["sources"]) == {"96x64", "64x48"}
  for source in summary["sources"].values():
    assert source["theirs"].startswith("stand-in")
    for key in ("ratio_pil_uint8", "ratio_pil", "cpu_ratio_pil_uint8", "cpu_ratio_pil"):
      assert source[key] > 0
  rounds = [l for l in lines if l.get("name") == "ours_pil_uint8"]
  assert len(rounds) == 2 and all(r["images"] == 16 for r in rounds)  # 8 pairs (i, i + 1)
