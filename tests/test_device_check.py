"""benchmarks/device_check.sh runs by itself at its tiny size on a machine without an accelerator
and writes a sane JSON summary (the script is meant for a lent GPU; this keeps it from rotting)."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_device_check_tiny(tmp_path):
  env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable, GCL_TORCH_PYTHON="",
             DEVICE_CHECK_SIZE="tiny", JAX_PLATFORMS="cpu")
  env.pop("STAGES", None)
  proc = subprocess.run(["bash", os.path.join(REPO, "benchmarks", "device_check.sh")], env=env,
                        capture_output=True, text=True, timeout=900, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(tmp_path / "device_check.json") as f:
    summary = json.load(f)
  assert json.loads(proc.stdout.strip().splitlines()[-1]) == summary  # also the last line
  assert summary["kind"] == "device_check" and summary["size"] == "tiny" and summary["ok"]
  assert summary["env"]["backend"] == "cpu"
  assert set(summary["stages"]) == {"step_bfloat16", "step_float32", "parity", "knn"}
  assert all(s["ok"] and s["seconds"] > 0 for s in summary["stages"].values())
  for dtype in ("bfloat16", "float32"):
    step = summary["step"][dtype]
    assert step["kind"] == "summary" and step["dtype"] == dtype and step["arch"] == "resnet18"
    assert step["pairs_per_s"] > 0 and step["flops_per_step"] > 1e6
    assert step["mfu"] is None and step["peak_source"].startswith("unknown")  # a CPU
    assert step["ratio"] is None  # no torch reference asked for
  parity = summary["parity"]
  assert parity["ok"] and set(parity["archs"]) == {"resnet18"}
  assert parity["max_abs_float32_highest"] < 1e-4
  assert parity["archs"]["resnet18"]["min_cos_bfloat16_default"] > 0.99
  knn = summary["knn"]
  assert knn["ok"] and knn["reference_queries"] == knn["queries"] == 500
  assert knn["set_recall"] >= 0.999 and knn["index_agreement"] >= 0.99
  assert knn["max_abs_distance_diff"] < 1e-3 and knn["ratio"] > 0
  head = summary["headline"]
  assert head["mfu_goal"] == 0.4 and head["bf16_mfu"] is None
  assert head["parity_ok"] and head["knn_ok"]
  # What comes back from the device machine: at most 8 files, none nested.
  files = sorted(os.listdir(tmp_path))
  assert len(files) <= 8 and "device_check.json" in files
  assert all((tmp_path / f).is_file() for f in files)
