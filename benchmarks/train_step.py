"""Benchmark: throughput of the ResNet-GeM GCL train step, ours (JAX) vs PyTorch, same run.

Ours: `gcl_jax.train.step.make_train_step` on `configs/msls.py` (ResNet-50, BatchNorm, GeM p=3,
GCL margin 0.5, SGD lr 0.1 without momentum), one device, `--pairs` pairs per step (2 x pairs
images through the shared network), measured with XLA's native convolutions ("native") and with
`gcl_jax.models.cpu_conv` swapped into every nnx.Conv ("cpu_conv": im2col + GEMM weight
gradients where measured faster on CPU).

Reference (when a Python with torch + torchvision is given, --torch_python or $GCL_TORCH_PYTHON):
the same step in PyTorch, run as a subprocess of this script with that interpreter
(`--torch_worker`): torchvision resnet50 without avgpool/fc, GeM p=3 (learnable), L2, the
authors' loss d = ||a - b + 1e-6||, L = psi d^2/2 + (1 - psi) max(0.5 - d, 0)^2/2, mean, SGD
lr 0.1, with OMP_WAIT_POLICY=PASSIVE (see --torch_omp_wait_policy). Rounds are interleaved:
each round times `--iters` JAX steps of every variant and then `--iters` torch steps, and the
figures are medians over rounds, so both sides see the same machine load.

FLOPs: XLA's own count for the compiled step, `jax.jit(step).lower(...).compile()
.cost_analysis()["flops"]` (forward + backward + SGD update of the whole step; the patch path's
extra GEMM work is counted as what it executes). Achieved FLOP/s = that count / median step
time; torch is credited with the native variant's count (same mathematical work).

Every line is a JSON object; the LAST line is the summary for the last `--sizes` entry with
`arch`, `size`, `pairs`, `pairs_per_s` (ours, the variant `conv_for_platform` picks on this
backend), `torch_pairs_per_s`, `ratio` (ours / torch pairs/s; > 1: ours faster) and
`cpu_conv_speedup` (cpu_conv / native pairs/s).

    python benchmarks/train_step.py --quick          # resnet18, 112x112, 2 pairs (about 1 min)
    python benchmarks/train_step.py --pairs=4 --sizes=224x224,480x640
    python benchmarks/train_step.py --cpu_conv=off --no_torch   # native XLA convolutions only
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch_process  # pylint: disable=g-import-not-at-top  (benchmarks/torch_process.py)

emit, find_torch = torch_process.emit, torch_process.find_torch
DEFAULT_TORCH_PYTHON = torch_process.DEFAULT_TORCH_PYTHON
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_size(text: str) -> tuple[int, int]:
  """'480x640' -> (480, 640) (height x width)."""
  try:
    h, w = (int(v) for v in text.lower().split("x"))
  except ValueError as e:
    raise argparse.ArgumentTypeError(f"size must look like 480x640 (HxW), got {text!r}") from e
  return h, w


# ------------------------------------------------------------------------------------------------
# PyTorch worker (runs under the torch interpreter; imports nothing from this project).
# ------------------------------------------------------------------------------------------------


def torch_worker(arch: str, pairs: int, height: int, width: int, seed: int) -> None:
  """Builds the torch step, then answers 'run N' lines on stdin with one JSON line each."""
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
  import torchvision  # pylint: disable=g-import-not-at-top

  torch.manual_seed(seed)

  class GeM(torch.nn.Module):

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
      super().__init__()
      self.p = torch.nn.Parameter(torch.ones(1) * p)
      self.eps = eps

    def forward(self, x):
      return F.avg_pool2d(x.clamp(min=self.eps).pow(self.p), x.shape[-2:]).pow(1.0 / self.p)

  class Net(torch.nn.Module):

    def __init__(self):
      super().__init__()
      resnet = getattr(torchvision.models, arch)(weights=None)
      self.backbone = torch.nn.Sequential(*list(resnet.children())[:-2])
      self.pool = GeM()

    def forward(self, x):
      return F.normalize(self.pool(self.backbone(x)).flatten(1), p=2, dim=1)

  net = Net().train()
  opt = torch.optim.SGD(net.parameters(), lr=0.1)
  im0 = torch.randn(pairs, 3, height, width)
  im1 = torch.randn(pairs, 3, height, width)
  label = torch.rand(pairs)

  def step():
    opt.zero_grad(set_to_none=True)
    a, b = net(im0), net(im1)
    d = torch.nn.functional.pairwise_distance(a, b)  # ||a - b + 1e-6||
    loss = (label * d.pow(2) / 2 + (1 - label) * torch.clamp(0.5 - d, min=0).pow(2) / 2).mean()
    loss.backward()
    opt.step()
    return float(loss.detach())

  t0 = time.perf_counter()
  step()
  print(json.dumps({"ready": True, "first_step_s": time.perf_counter() - t0,
                    "threads": torch.get_num_threads(), "torch": torch.__version__}), flush=True)
  for line in sys.stdin:
    cmd = line.split()
    if not cmd or cmd[0] == "quit":
      break
    n = int(cmd[1])
    t0 = time.perf_counter()
    for _ in range(n):
      loss = step()
    print(json.dumps({"seconds": time.perf_counter() - t0, "steps": n, "loss": loss}), flush=True)


class TorchReference(torch_process.TorchProcess):
  """The torch step in a subprocess, driven line by line (so rounds can be interleaved)."""

  def __init__(self, python: str, arch: str, pairs: int, height: int, width: int, seed: int,
               omp_wait_policy: str = "PASSIVE"):
    super().__init__(python, __file__, ["--torch_worker", f"--arch={arch}", f"--pairs={pairs}",
                                        f"--sizes={height}x{width}", f"--seed={seed}"],
                     omp_wait_policy)

  def run(self, steps: int) -> float:
    """Runs `steps` torch steps; returns seconds per step."""
    return self.request(f"run {steps}")["seconds"] / steps


# ------------------------------------------------------------------------------------------------
# Ours.
# ------------------------------------------------------------------------------------------------


def build_jax_step(arch: str, pairs: int, height: int, width: int, conv: str, seed: int):
  """Compiled train step of configs/msls.py with `conv` ("native" or "cpu_conv") convolutions.

  Returns (run_one, info): run_one() performs one step (state carried inside) and blocks;
  info holds compile seconds and XLA's FLOP count.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from configs import msls  # pylint: disable=g-import-not-at-top
  from gcl_jax.models import build_model, cpu_conv  # pylint: disable=g-import-not-at-top
  from gcl_jax.train import sharding  # pylint: disable=g-import-not-at-top
  from gcl_jax.train import state as state_lib  # pylint: disable=g-import-not-at-top
  from gcl_jax.train import step as step_lib  # pylint: disable=g-import-not-at-top

  config = msls.get_config()
  config.seed = seed
  config.model.arch = arch
  config.data.image_size = (height, width)
  config.train.batch_size = pairs
  config.train.grad_accum_steps = 1
  config.optimizer.name = "sgd"
  config.optimizer.schedule = "constant"
  config.optimizer.learning_rate = 0.1
  mesh = sharding.make_mesh(1)
  model = build_model(config.model, seed=seed)
  if conv == "cpu_conv":
    cpu_conv.set_conv(model, cpu_conv.conv_general_dilated)
  model_def, state, tx = state_lib.create_train_state(config, mesh, model=model)
  step = step_lib.make_train_step(model_def, config, tx, mesh)
  rng = np.random.default_rng(seed)
  local = {
      "im0": rng.standard_normal((pairs, height, width, 3), np.float32),
      "im1": rng.standard_normal((pairs, height, width, 3), np.float32),
      "label": rng.uniform(size=(pairs,)).astype(np.float32),
  }
  batch = sharding.global_batch(local, mesh)
  t0 = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - t0
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older JAX: one dict per computation
    cost = cost[0] if cost else {}
  flops = float((cost or {}).get("flops", float("nan")))
  holder = {"state": state}

  def run_one() -> float:
    t = time.perf_counter()
    holder["state"], metrics = compiled(holder["state"], batch)
    jax.block_until_ready((holder["state"], metrics))  # nothing left running during torch's turn
    return time.perf_counter() - t

  t0 = time.perf_counter()
  holder["state"], metrics = compiled(holder["state"], batch)
  loss = float(metrics["loss"])
  first_s = time.perf_counter() - t0
  return run_one, {"compile_s": compile_s, "first_step_s": first_s, "flops": flops,
                   "loss": loss, "backend": jax.default_backend()}


def bench_size(args, height: int, width: int, torch_python: str | None) -> dict:
  """Measures every variant (and torch) at one size, interleaved; emits lines; returns summary."""
  size = f"{height}x{width}"
  variants = {"off": ["native"], "on": ["cpu_conv"], "both": ["native", "cpu_conv"]}[args.cpu_conv]
  runners, infos = {}, {}
  for conv in variants:
    runners[conv], infos[conv] = build_jax_step(args.arch, args.pairs, height, width, conv,
                                                args.seed)
    emit(kind="compile", arch=args.arch, size=size, pairs=args.pairs, conv=conv, **infos[conv])
  ref = None
  if torch_python:
    ref = TorchReference(torch_python, args.arch, args.pairs, height, width, args.seed,
                         args.torch_omp_wait_policy)
    emit(kind="torch_ready", size=size, python=torch_python, **ref.info)
  times = {k: [] for k in list(runners) + (["torch"] if ref else [])}
  try:
    for r in range(args.rounds):
      for conv, run_one in runners.items():
        times[conv].append(statistics.median(run_one() for _ in range(args.iters)))
      if ref:
        times["torch"].append(ref.run(args.iters))
      emit(kind="round", size=size, round=r, step_s={k: v[-1] for k, v in times.items()})
  finally:
    if ref:
      ref.close()
  flops_ref = infos.get("native", next(iter(infos.values())))["flops"]
  result = {}
  for name, ts in times.items():
    step_s = statistics.median(ts)
    flops = infos[name]["flops"] if name in infos else flops_ref
    result[name] = {"step_s": step_s, "pairs_per_s": args.pairs / step_s,
                    "flops_per_step": flops, "flop_per_s": flops / step_s}
    emit(kind="measurement", arch=args.arch, size=size, pairs=args.pairs, impl=name,
         rounds=len(ts), iters_per_round=args.iters, **result[name])
  from gcl_jax.models import cpu_conv  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  picked = "cpu_conv" if cpu_conv.conv_for_platform() is cpu_conv.conv_general_dilated else "native"
  ours = picked if picked in result else next(iter(runners))
  summary = {
      "torch_omp_wait_policy": args.torch_omp_wait_policy if ref else None,
      "arch": args.arch, "size": size, "pairs": args.pairs, "ours": ours,
      "backend": jax.default_backend(), "pairs_per_s": result[ours]["pairs_per_s"],
      "flop_per_s": result[ours]["flop_per_s"], "flops_source": "XLA cost_analysis()['flops']",
      "compile_s": {k: v["compile_s"] for k, v in infos.items()},
      "loadavg_1min": os.getloadavg()[0], "cpus": os.cpu_count(),
  }
  for conv in runners:
    summary[f"{conv}_pairs_per_s"] = result[conv]["pairs_per_s"]
  if "native" in result and "cpu_conv" in result:
    summary["cpu_conv_speedup"] = (result["cpu_conv"]["pairs_per_s"]
                                   / result["native"]["pairs_per_s"])
  if "torch" in result:
    summary["torch_pairs_per_s"] = result["torch"]["pairs_per_s"]
    summary["ratio"] = result[ours]["pairs_per_s"] / result["torch"]["pairs_per_s"]
    for conv in runners:
      summary[f"ratio_{conv}"] = result[conv]["pairs_per_s"] / result["torch"]["pairs_per_s"]
  else:
    summary["ratio"] = None
    summary["torch"] = ("not measured (--no_torch, or no torch + torchvision at "
                        f"--torch_python={args.torch_python})")
  return summary


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--arch", default="resnet50")
  parser.add_argument("--pairs", type=int, default=4, help="pairs per step (2x images)")
  parser.add_argument("--sizes", default="224x224,480x640", help="comma-separated HxW")
  parser.add_argument("--iters", type=int, default=2, help="timed steps per round")
  parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
  parser.add_argument("--cpu_conv", choices=("both", "on", "off"), default="both",
                      help="measure XLA's native convolutions, cpu_conv's, or both")
  parser.add_argument("--torch_python", default=DEFAULT_TORCH_PYTHON,
                      help="interpreter with torch + torchvision for the reference")
  parser.add_argument("--no_torch", action="store_true", help="skip the PyTorch reference")
  parser.add_argument("--torch_omp_wait_policy", default="PASSIVE",
                      help="OMP_WAIT_POLICY of the torch worker ('' keeps the environment's). "
                      "PASSIVE because on a shared, oversubscribed CPU torch's spinning OpenMP "
                      "threads ran 2-25x slower than with PASSIVE (measured 0.22 s vs 0.5-5.7 s "
                      "per resnet18 step); it never made torch slower in our runs")
  parser.add_argument("--quick", action="store_true",
                      help="resnet18, 112x112, 2 pairs, 1 step x 2 rounds (about a minute)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--torch_worker", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.quick:
    args.arch, args.pairs, args.sizes, args.iters, args.rounds = "resnet18", 2, "112x112", 1, 2
  sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
  if args.pairs < 1 or not sizes:
    parser.error("--pairs must be >= 1 and --sizes non-empty")
  if args.torch_worker:
    torch_worker(args.arch, args.pairs, *sizes[0], args.seed)
    return
  sys.path.insert(0, REPO)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  torch_python = None if args.no_torch else find_torch(args.torch_python)
  summaries = [bench_size(args, h, w, torch_python) for h, w in sizes]
  for s in summaries[:-1]:
    emit(kind="size_summary", **s)
  emit(kind="summary", **summaries[-1])


if __name__ == "__main__":
  main()
