"""benchmarks/train_step.py and benchmarks/peaks.py: MFU against the peak table, the summary
line's keys, and the PyTorch worker when an interpreter with torch is configured."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

import peaks  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.mark.parametrize("name,dtype,tflops", [
    ("NVIDIA H200", "bfloat16", 989.4),
    ("NVIDIA H100 80GB HBM3", "bfloat16", 989.4),
    ("NVIDIA H100 PCIe", "bfloat16", 756.5),
    ("NVIDIA A100-SXM4-80GB", "bfloat16", 312.0),
    ("NVIDIA A100-SXM4-40GB", "float32", 19.5),
    ("NVIDIA L40S", "bfloat16", 362.05),
    ("NVIDIA L4", "bfloat16", 121.0),
    ("TPU v5 lite", "bfloat16", 197.0),
    ("TPU v5p", "bfloat16", 459.0),
    ("TPU v4", "bfloat16", 275.0),
])
def test_peak_table(name, dtype, tflops):
  out = peaks.mfu(tflops * 1e12 / 2, name, dtype, "tpu" if "TPU" in name else "gpu")
  assert out["peak_flop_per_s"] == pytest.approx(tflops * 1e12)
  assert out["mfu"] == pytest.approx(0.5)
  assert out["device"] in out["peak_source"]


def test_float32_on_gpu_also_against_tf32_and_cpu_unknown():
  out = peaks.mfu(66.9e12, "NVIDIA H200", "float32", "gpu")
  assert out["mfu"] == pytest.approx(1.0)
  assert out["mfu_tf32"] == pytest.approx(66.9 / 494.7)
  cpu = peaks.mfu(1e9, "cpu", "bfloat16", "cpu")
  assert cpu["mfu"] is None and cpu["peak_flop_per_s"] is None
  assert cpu["peak_source"].startswith("unknown")
  tpu = peaks.mfu(1e12, "TPU v4", "float32", "tpu")  # no published float32 rate
  assert tpu["mfu"] is None and tpu["peak_source"].startswith("unknown")


def _run(*extra):
  out = subprocess.run(
      [sys.executable, os.path.join(REPO, "benchmarks", "train_step.py"), "--arch=resnet18",
       "--sizes=32x32", "--pairs=2", "--iters=1", "--rounds=1", "--cpu_conv=off", *extra],
      capture_output=True, text=True, timeout=900, check=True)
  return [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]


@pytest.mark.slow
def test_train_step_benchmark_bfloat16_summary():
  torch_python = os.environ.get("GCL_TORCH_PYTHON", "")
  extra = [f"--torch_python={torch_python}", "--torch_memory_format=contiguous"]
  lines = _run("--dtype=bfloat16", *(extra if torch_python else ["--no_torch"]))
  summary = lines[-1]
  assert summary["kind"] == "summary" and summary["dtype"] == "bfloat16"
  assert summary["ours"] == "native" and summary["backend"] == "cpu"
  assert summary["flops_per_step"] > 1e7 and summary["flops_compiled"] > 1e7
  assert summary["flop_per_s"] == pytest.approx(summary["flops_per_step"] / summary["step_s"])
  assert summary["mfu"] is None and summary["peak_source"].startswith("unknown")
  assert summary["configs"][0]["dtype"] == "bfloat16"
  if torch_python:  # the reference ran: its settings are named, the ratio is a number
    assert summary["torch_settings"]["autocast"] == "bfloat16"
    assert summary["torch_settings"]["memory_format"] == "contiguous"
    assert summary["ratio"] > 0
  else:
    assert summary["ratio"] is None
