#!/usr/bin/env bash
# One device check of gcl-jax on an accelerator machine, in at most 8 minutes:
#
#   step_bfloat16, step_float32  the paper's GCL train step (ResNet-50-GeM, 480x640, 32 pairs) in
#                    bfloat16 and float32: pairs/s, FLOP/s from XLA's cost analysis, MFU against
#                    the device's datasheet peak, and PyTorch's step on the same device in the
#                    same run (bf16 autocast, best memory format, cudnn.benchmark, TF32) with the
#                    ratio (benchmarks/train_step.py);
#   parity           descriptors of converted models (tests/data/torch_golden_*.safetensors) on
#                    the accelerator against the CPU torch goldens (torch_golden_io.npz), float32
#                    at highest and default matmul precision, and bfloat16;
#   knn              exact kNN of the evaluation on the device mesh (gcl_jax.evaluation.mesh_knn),
#                    100,000 queries x 100,000 database rows x 2048-d, against FAISS's exact
#                    IndexFlatL2 on the host CPU (gcl_jax.evaluation.knn.knn_search).
#
# It writes $OUT/device_check.json (the summary; also the last line of stdout) beside each
# stage's log. Without an accelerator (jax's backend is the CPU) it runs by itself at a tiny size
# in about a minute (tests/test_device_check.py keeps it working); DEVICE_CHECK_SIZE=tiny|full
# forces a size, STAGES="knn parity" runs a subset, DEVICE_CHECK_BUDGET_S (default 470) bounds
# the whole run, PYTHON the interpreter (default python3), GCL_TORCH_PYTHON torch's (default: the
# same interpreter; empty: no torch reference).
#
# On a lent NVIDIA H200 (python3 there has jax 0.11.2 + CUDA, flax, optax, torch, torchvision; no
# ml-collections, no faiss, no network), through the device tool:
#
#   1. Once, here, from the project root, fetch the wheels it carries (19.4 MB; with the 5 MB
#      working tree well under the 64 MiB a call takes): ml-collections (configs/, imported by the
#      model and the step) and faiss-cpu (gcl_jax.evaluation imports it; the host reference of the
#      kNN) are not on the machine; flax 0.12.12 pins the flax that was tested with jax 0.11.2
#      (it needs jax >= 0.11.1). Their own needs (numpy, packaging, absl-py, PyYAML, msgpack,
#      optax, orbax-checkpoint, tensorstore, rich, treescope) are there.
#        echo /.whl/ >> .git/info/exclude
#        python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#          --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
#          --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#          --platform manylinux1_x86_64 -d .whl faiss-cpu==1.15.1 ml-collections==1.1.0 flax==0.12.12
#   2. run with  carry=[".whl"]  timeout_s=540  and the command
#        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit; PYTHONUNBUFFERED=1 bash benchmarks/device_check.sh 2>&1 | tee $OUT/log.txt
#      The reply's output_tail ends with the JSON summary; $OUT's files come back (6 files).
#      To redo one stage within the lease: the same call with STAGES=knn (or parity, step_float32,
#      ...) before `bash`, and DEVICE_CHECK_BUDGET_S=200, timeout_s=260.
#
# Locally: OUT=/tmp/dc bash benchmarks/device_check.sh   (PYTHON=.venv/bin/python if needed).

set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
PYTHON=$(command -v "${PYTHON:-python3}") || { echo "no python: ${PYTHON:-python3}" >&2; exit 1; }
if [[ -z "${OUT:-}" ]]; then
  OUT=$(mktemp -d "${TMPDIR:-/tmp}/device_check.XXXXXX")
fi
mkdir -p "$OUT"
export OUT PYTHON
export GCL_TORCH_PYTHON=${GCL_TORCH_PYTHON-$PYTHON}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}

exec "$PYTHON" - <<'PYEOF'
"""Driver: runs each stage in its own interpreter under a deadline; writes the JSON summary."""

import json
import os
import shutil
import subprocess
import sys
import time

T0 = time.monotonic()
OUT = os.environ["OUT"]
PY = sys.executable
BUDGET_S = float(os.environ.get("DEVICE_CHECK_BUDGET_S", "470"))
MFU_GOAL = 0.40  # bf16 ResNet-50 480x640 step on an H100/H200-class GPU
# Least time each stage is given (seconds), so that an overrunning stage leaves room for the next.
RESERVE = {"step_bfloat16": 120, "step_float32": 90, "parity": 30, "knn": 90}
CAP = {"step_bfloat16": 200, "step_float32": 170, "parity": 90, "knn": 240}


def log(msg):
  print(f"[device_check {time.monotonic() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def probe():
  code = r"""
import json, platform, jax
info = {"backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind,
        "num_devices": jax.device_count(), "python": platform.python_version(),
        "jax": jax.__version__}
for name in ("jaxlib", "flax", "optax", "numpy", "ml_collections", "faiss", "torch",
             "torchvision"):
  try:
    mod = __import__(name)
    info[name] = getattr(mod, "__version__", "?")
  except Exception as e:
    info[name] = f"missing ({type(e).__name__})"
print(json.dumps(info))
"""
  out = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=120, check=True)
  info = json.loads(out.stdout.strip().splitlines()[-1])
  if shutil.which("nvidia-smi"):
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.sm",
                          "--format=csv,noheader"], capture_output=True, text=True, check=False)
    info["nvidia_smi"] = smi.stdout.strip()
  return info


def run_stage(name, cmd, log_name, timeout):
  """Runs cmd, its stdout to $OUT/log_name; returns (ok, seconds, error, stdout lines)."""
  t = time.monotonic()
  path = os.path.join(OUT, log_name)
  log(f"{name}: start (at most {timeout:.0f} s)")
  try:
    with open(path, "w") as f:
      proc = subprocess.run(cmd, stdout=f, stderr=subprocess.PIPE, text=True, timeout=timeout,
                            check=False)
    err = None if proc.returncode == 0 else f"exit {proc.returncode}: {proc.stderr[-1500:]}"
    if proc.stderr:
      sys.stderr.write(proc.stderr[-3000:])
  except subprocess.TimeoutExpired as e:
    err = f"timed out after {timeout:.0f} s"
    if e.stderr:
      sys.stderr.write((e.stderr if isinstance(e.stderr, str) else e.stderr.decode())[-3000:])
  with open(path) as f:
    lines = [l for l in f.read().splitlines() if l.startswith("{")]
  seconds = time.monotonic() - t
  log(f"{name}: {'ok' if err is None else 'FAILED: ' + err.splitlines()[0]} in {seconds:.0f} s")
  return err is None, seconds, err, lines


def deadline_for(name, stages):
  later = stages[stages.index(name) + 1:]
  left = BUDGET_S - (time.monotonic() - T0) - sum(RESERVE[s] for s in later)
  return max(min(CAP[name], left), 20.0)


PARITY = r"""
import json, sys, time, zlib
import numpy as np
import jax, jax.numpy as jnp
from flax import nnx
sys.path.insert(0, ".")
from configs import default
from gcl_jax.models import build_model, weights

archs = sys.argv[1].split(",")
io = dict(np.load("tests/data/torch_golden_io.npz"))
images = jnp.asarray(np.transpose(io["images"], (0, 2, 3, 1)))  # NCHW -> NHWC
out = {"device": jax.devices()[0].device_kind, "images": list(images.shape), "archs": {}}

def seeded_conv_weight(key, shape):  # as tests/data/make_torch_goldens.py
  rng = np.random.default_rng(zlib.crc32(key.encode()))
  fan_out = shape[0] * int(np.prod(shape[2:]))
  return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_out)).astype(np.float32)

for arch in archs:
  t = time.perf_counter()
  sd = weights.read_state_dict(f"tests/data/torch_golden_{arch}.safetensors")
  if f"{arch}_seeded_shapes" in io:
    for key, shape in json.loads(str(io[f"{arch}_seeded_shapes"])).items():
      sd[key] = seeded_conv_weight(key, tuple(shape))
  ref, ref64 = io[f"{arch}_desc"], io[f"{arch}_desc64"]
  res = {}
  for dtype in ("float32", "bfloat16"):
    cfg = default.get_config().model
    cfg.arch, cfg.width, cfg.norm, cfg.pool, cfg.dtype = arch, 8, "batch", "gem", dtype
    model = weights.convert_state_dict(sd, nnx.eval_shape(lambda: build_model(cfg)))
    model.eval()
    graphdef, state = nnx.split(model)
    fwd = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
    precisions = ("highest", "default") if dtype == "float32" else ("default",)
    for prec in precisions:
      with jax.default_matmul_precision(prec):
        desc = np.asarray(fwd(state, images))
      key = f"{dtype}_{prec}"
      res[f"max_abs_{key}"] = float(np.max(np.abs(desc - ref)))
      res[f"max_abs_vs_float64_{key}"] = float(np.max(np.abs(desc - ref64)))
      res[f"min_cos_{key}"] = float(np.min(np.sum(desc * ref, axis=1)))
  # Same bars as the CPU tests: float32 1e-4 (test_torch_parity), bfloat16 cos > 0.99 and
  # max abs < 2e-2 (test_bf16); float32 at default precision (TF32 on recent GPUs) like bfloat16.
  res["ok"] = bool(res["max_abs_float32_highest"] < 1e-4
                   and res["min_cos_float32_default"] > 0.99
                   and res["max_abs_float32_default"] < 2e-2
                   and res["min_cos_bfloat16_default"] > 0.99
                   and res["max_abs_bfloat16_default"] < 2e-2)
  res["seconds"] = time.perf_counter() - t
  out["archs"][arch] = res
  print(json.dumps({"kind": "parity", "arch": arch, **res}), flush=True)
out["ok"] = all(r["ok"] for r in out["archs"].values())
out["max_abs_float32_highest"] = max(r["max_abs_float32_highest"] for r in out["archs"].values())
print(json.dumps({"kind": "summary", **out}), flush=True)
"""

KNN = r"""
import json, sys, time
import numpy as np
sys.path.insert(0, ".")
import jax
from gcl_jax import parallel
from gcl_jax.evaluation import mesh_knn

T_START = time.perf_counter()
nq, ndb, dim, k = (int(v) for v in sys.argv[1:5])
rng = np.random.default_rng(0)
t = time.perf_counter()
def unit(n):  # L2-normalized descriptors, as the network's
  x = rng.standard_normal((n, dim), dtype=np.float32)
  return x / np.linalg.norm(x, axis=1, keepdims=True)
db, queries = unit(ndb), unit(nq)
gen_s = time.perf_counter() - t
mesh = parallel.make_mesh()
out = {"queries": nq, "database": ndb, "dim": dim, "k": k, "devices": mesh.devices.size,
       "device": jax.devices()[0].device_kind, "data_gen_s": gen_s}
t = time.perf_counter()
dm, im = mesh_knn.mesh_knn(db, queries, k, mesh)
out["mesh_first_s"] = time.perf_counter() - t  # compile + transfer + search
t = time.perf_counter()
dm, im = mesh_knn.mesh_knn(db, queries, k, mesh)
out["mesh_s"] = time.perf_counter() - t  # transfer + search
out["mesh_tflop_per_s"] = 2.0 * nq * ndb * dim / out["mesh_s"] / 1e12
print(json.dumps({"kind": "mesh_knn", **out}), flush=True)
try:
  import faiss
  from gcl_jax.evaluation.knn import knn_search
  out["reference"] = (f"FAISS {faiss.__version__} IndexFlatL2 (knn_search, exact) on the host "
                      f"CPU, {faiss.omp_get_max_threads()} threads")
except ImportError:
  import os
  out["reference"] = (f"exact NumPy search on the host CPU (faiss not installed), "
                      f"{os.cpu_count()} cpus")
  def knn_search(db, q, k):
    d = np.sum(q * q, axis=1)[:, None] + np.sum(db * db, axis=1)[None, :] - 2.0 * (q @ db.T)
    part = np.argpartition(d, k - 1, axis=1)[:, :k]
    dp = np.take_along_axis(d, part, 1)
    order = np.lexsort((part, dp), axis=1)
    return np.take_along_axis(dp, order, 1), np.take_along_axis(part, order, 1)
# Search the queries in chunks until the time left (argv[5], seconds) would be overrun: the
# comparison then covers the first `reference_queries` queries (the mesh searched them all).
budget = float(sys.argv[5]) - (time.perf_counter() - T_START)
chunk = max(4096, -(-nq // 8))
dr, ir, done, t = [], [], 0, time.perf_counter()
while done < nq:
  d, i = knn_search(db, queries[done:done + chunk], k)
  dr.append(d); ir.append(i); done += len(d)
  elapsed = time.perf_counter() - t
  if done < nq and elapsed + elapsed / done * min(chunk, nq - done) > budget:
    break
dr, ir = np.concatenate(dr), np.concatenate(ir)
out["reference_s"] = time.perf_counter() - t
out["reference_queries"] = done
out["reference_s_all_queries"] = out["reference_s"] * nq / done  # extrapolated when done < nq
out["ratio"] = out["reference_s_all_queries"] / out["mesh_s"]
im, dm = im[:done], dm[:done]
same = im == ir
out["index_agreement"] = float(same.mean())
out["rows_identical"] = float(same.all(axis=1).mean())
out["set_recall"] = float(np.mean([len(np.intersect1d(a, b)) / k for a, b in zip(im, ir)]))
out["max_abs_distance_diff"] = float(np.max(np.abs(dm - dr)))
# Exact searches in float32 may swap neighbours whose distances tie to rounding (about 1e-6 here).
out["ok"] = bool(out["set_recall"] >= 0.999 and out["max_abs_distance_diff"] < 1e-3)
print(json.dumps({"kind": "summary", **out}), flush=True)
"""


def main():
  info = probe()
  accel = info["backend"] != "cpu"
  size = os.environ.get("DEVICE_CHECK_SIZE", "") or ("full" if accel else "tiny")
  stages = os.environ.get("STAGES", "step_bfloat16 step_float32 parity knn").split()
  unknown = set(stages) - set(RESERVE)
  if unknown:
    raise SystemExit(f"unknown STAGES {sorted(unknown)}; choose from {list(RESERVE)}")
  log(f"size={size} backend={info['backend']} device={info['device_kind']} stages={stages}")
  torch_python = os.environ.get("GCL_TORCH_PYTHON", "")
  summary = {"kind": "device_check", "size": size, "env": info, "stages": {}}
  if size == "full":
    step_args = ["--headline", "--iters=5", "--rounds=5", "--warmup=2"]
    parity_archs = "resnet18,resnet50,vgg16,resnext101_32x8d"
    knn_args = ["100000", "100000", "2048", "20"]
  else:
    step_args = ["--arch=resnet18", "--sizes=32x32", "--pairs=2", "--iters=1", "--rounds=1",
                 "--cpu_conv=off", "--torch_memory_format=contiguous"]
    parity_archs = "resnet18"
    knn_args = ["500", "2000", "64", "5"]
  torch_args = [f"--torch_python={torch_python}"] if torch_python else ["--no_torch"]
  for name in stages:
    timeout = deadline_for(name, stages)
    if name.startswith("step_"):
      dtype = name.split("_", 1)[1]
      cmd = [PY, "benchmarks/train_step.py", *step_args, f"--dtype={dtype}", *torch_args]
      ok, secs, err, lines = run_stage(name, cmd, f"{name}.jsonl", timeout)
      last = json.loads(lines[-1]) if lines else {}
      if last.get("kind") != "summary":
        ok, err = False, err or "no summary line"
      else:
        summary.setdefault("step", {})[dtype] = last
    else:
      if name == "parity":
        cmd = [PY, "-c", PARITY, parity_archs]
      else:  # the FAISS reference gets what is left after the mesh search, less a margin
        cmd = [PY, "-c", KNN, *knn_args, str(max(timeout - 45, 10))]
      ok, secs, err, lines = run_stage(name, cmd, f"{name}.jsonl", timeout)
      records = [json.loads(l) for l in lines]
      if records and records[-1].get("kind") == "summary":
        summary[name] = records[-1]
        ok = ok and summary[name]["ok"]
      else:  # keep what the stage printed before it failed
        summary[name] = {"partial": records}
        ok, err = False, err or "no summary line"
    summary["stages"][name] = {"ok": ok, "seconds": round(secs, 1),
                               **({"error": err} if err else {})}
  bf16 = summary.get("step", {}).get("bfloat16", {})
  summary["headline"] = {
      "mfu_goal": MFU_GOAL,
      "bf16_mfu": bf16.get("mfu"),
      "bf16_mfu_goal_met": None if bf16.get("mfu") is None else bf16["mfu"] >= MFU_GOAL,
      "bf16_pairs_per_s": bf16.get("pairs_per_s"),
      "bf16_ratio_vs_torch": bf16.get("ratio"),
      "float32_mfu": summary.get("step", {}).get("float32", {}).get("mfu"),
      "float32_ratio_vs_torch": summary.get("step", {}).get("float32", {}).get("ratio"),
      "parity_ok": summary.get("parity", {}).get("ok"),
      "knn_ok": summary.get("knn", {}).get("ok"),
      "knn_ratio_vs_cpu": summary.get("knn", {}).get("ratio"),
  }
  summary["ok"] = all(s["ok"] for s in summary["stages"].values())
  summary["total_s"] = round(time.monotonic() - T0, 1)
  with open(os.path.join(OUT, "device_check.json"), "w") as f:
    json.dump(summary, f, indent=1)
  print(json.dumps(summary), flush=True)
  return 0 if summary["ok"] else 1


sys.exit(main())
PYEOF
