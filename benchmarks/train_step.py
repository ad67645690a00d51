"""Benchmark: the GCL train step, ours (JAX) vs PyTorch in the same run, with FLOP/s and MFU.

Ours: `gcl_jax.train.step.make_train_step` on `configs/msls.py` (by default ResNet-50,
BatchNorm, GeM p=3, GCL margin 0.5, SGD lr 0.1 without momentum; `--arch` picks any configured
backbone: resnet18/34/50/101/152, resnext101_32x8d, vgg16), on one device, `--pairs` pairs per
step (2 x pairs images through the shared network), computing in `--dtype` (float32, or
bfloat16 with float32 parameters: config.model.dtype). On CPU it is measured with XLA's native
convolutions ("native") and with `gcl_jax.models.cpu_conv` in every nnx.Conv ("cpu_conv": im2col
+ GEMM weight gradients); on GPUs and TPUs with XLA's convolutions only (`--cpu_conv`).

Reference (when a Python with torch + torchvision is given, --torch_python or $GCL_TORCH_PYTHON;
on a GPU machine whose python3 has torch, pass --torch_python=python3): the same step in
PyTorch, run as a subprocess of this script with that interpreter (`--torch_worker`):
torchvision's backbone (ResNet without avgpool/fc, VGG-16 features), GeM p=3 (learnable), L2,
the authors' loss d = ||a - b + 1e-6||, L = psi d^2/2 + (1 - psi) max(0.5 - d, 0)^2/2, mean, SGD
lr 0.1. It runs on CUDA when our backend is a GPU and torch sees one, else on CPU, with its best
settings, named in the output (`torch_settings`): bfloat16 through torch.autocast (parameters in
float32, as ours); channels_last or contiguous memory format, whichever its first steps measure
faster (`--torch_memory_format`); on CUDA cudnn.benchmark and TF32 for float32 convolutions and
matrix products (float32 at XLA's default precision may use TF32 too); on CPU
OMP_WAIT_POLICY=PASSIVE (see --torch_omp_wait_policy). torch.compile is off unless
--torch_compile (its compile time is minutes). Rounds are interleaved: each round times
`--iters` consecutive steps of every variant of ours and then `--iters` torch steps, and the
figures are medians over rounds, so both sides see the same machine load.

FLOPs: XLA's own count for the compiled step, `jax.jit(step).lower(...).compile()
.cost_analysis()["flops"]` (forward + backward + SGD update of the whole step; the cpu_conv
variant is counted as what it executes); the count of the unoptimised program
(`lower(...).cost_analysis()`) is reported beside it and used only when the compiled one is
missing or under 80 % of it. Achieved FLOP/s = that count / median step time; torch is credited
with the native variant's count (the same mathematical work). MFU = achieved FLOP/s / the
device's peak for the compute dtype (`benchmarks/peaks.py`: datasheet peaks of the usual GPUs
and TPUs, named in the output; "unknown" on CPUs). For float32 on GPUs, `mfu_tf32` is also
given against the TF32 tensor-core peak, which float32 convolutions may run at there.

Every line is a JSON object. A `config_summary` line follows each (dtype, size) but the last,
whose figures the LAST line, `summary`, gives (so list the headline last), with `arch`, `size`,
`pairs`, `dtype`, `device`, `pairs_per_s` (ours: the variant `conv_for_platform` picks on this
backend), `flop_per_s`, `mfu`, `torch_pairs_per_s`, `torch_mfu`, `ratio` (ours / torch pairs/s;
> 1: ours faster), `cpu_conv_speedup` (CPU only) and `configs` (the headline figures of every
configuration measured).

    python benchmarks/train_step.py --quick                       # resnet18, 112x112, 2 pairs
    python benchmarks/train_step.py --quick --dtype=float32,bfloat16
    python benchmarks/train_step.py --headline --dtype=float32,bfloat16 --torch_python=python3
    python benchmarks/train_step.py --pairs=4 --sizes=224x224,480x640 --cpu_conv=off --no_torch
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time

import peaks  # pylint: disable=g-import-not-at-top  (benchmarks/peaks.py)
import torch_process  # pylint: disable=g-import-not-at-top  (benchmarks/torch_process.py)

emit, find_torch = torch_process.emit, torch_process.find_torch
DEFAULT_TORCH_PYTHON = torch_process.DEFAULT_TORCH_PYTHON
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DTYPES = ("float32", "bfloat16")


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


def torch_worker(arch: str, pairs: int, height: int, width: int, seed: int, dtype: str,
                 device: str, memory_format: str, compile_model: bool) -> None:
  """Builds the torch step, then answers 'run N' lines on stdin with one JSON line each."""
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
  import torchvision  # pylint: disable=g-import-not-at-top

  torch.manual_seed(seed)
  if device == "auto":
    device = "cuda" if torch.cuda.is_available() else "cpu"
  dev = torch.device(device)
  settings = {"device": device, "autocast": dtype if dtype != "float32" else None,
              "torch_compile": compile_model}
  if dev.type == "cuda":
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.allow_tf32 = True
    settings.update({"cudnn.benchmark": True, "tf32": True,
                     "device_name": torch.cuda.get_device_name(dev)})
  else:
    settings.update({"threads": torch.get_num_threads(),
                     "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "")})

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
      net = getattr(torchvision.models, arch)(weights=None)
      if arch.startswith("vgg"):
        self.backbone = net.features  # the authors' 31 children: conv1_1 .. pool5
      else:
        self.backbone = torch.nn.Sequential(*list(net.children())[:-2])
      self.pool = GeM()

    def forward(self, x):
      return F.normalize(self.pool(self.backbone(x)).flatten(1), p=2, dim=1)

  net = Net().to(dev).train()
  opt = torch.optim.SGD(net.parameters(), lr=0.1)
  inputs = {"im0": torch.randn(pairs, 3, height, width, device=dev),
            "im1": torch.randn(pairs, 3, height, width, device=dev)}
  label = torch.rand(pairs, device=dev)
  autocast_dtype = {"bfloat16": torch.bfloat16, "float32": None}[dtype]
  forward = torch.compile(net) if compile_model else net

  def set_format(fmt: str) -> None:
    mf = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
    net.to(memory_format=mf)  # in place: the optimizer keeps the same Parameter objects
    for k in inputs:
      inputs[k] = inputs[k].contiguous(memory_format=mf)

  def step():
    opt.zero_grad(set_to_none=True)
    with (torch.autocast(dev.type, dtype=autocast_dtype) if autocast_dtype is not None
          else contextlib.nullcontext()):
      a, b = forward(inputs["im0"]), forward(inputs["im1"])
    a, b = a.float(), b.float()
    d = torch.nn.functional.pairwise_distance(a, b)  # ||a - b + 1e-6||
    loss = (label * d.pow(2) / 2 + (1 - label) * torch.clamp(0.5 - d, min=0).pow(2) / 2).mean()
    loss.backward()
    opt.step()
    return loss.detach()

  def sync():
    if dev.type == "cuda":
      torch.cuda.synchronize(dev)

  def timed(n: int) -> tuple[float, float]:
    sync()
    t0 = time.perf_counter()
    for _ in range(n):
      loss = step()
    loss = float(loss)  # waits for the device
    sync()
    return time.perf_counter() - t0, loss

  t0 = time.perf_counter()
  formats = ["channels_last", "contiguous"] if memory_format == "auto" else [memory_format]
  probe = {}
  for fmt in formats:  # first step of each format: cudnn.benchmark's search, allocator warm-up
    set_format(fmt)
    timed(1)
    if len(formats) > 1:
      n = 3 if dev.type == "cuda" else 1
      probe[fmt] = timed(n)[0] / n
  if probe:
    best = min(probe, key=probe.get)
    set_format(best)
    timed(1)
    settings["memory_format_probe_step_s"] = probe
  else:
    best = formats[0]
  settings["memory_format"] = best
  print(json.dumps({"ready": True, "warmup_s": time.perf_counter() - t0,
                    "torch": torch.__version__, "torchvision": torchvision.__version__,
                    "settings": settings}), flush=True)
  for line in sys.stdin:
    cmd = line.split()
    if not cmd or cmd[0] == "quit":
      break
    seconds, loss = timed(int(cmd[1]))
    print(json.dumps({"seconds": seconds, "steps": int(cmd[1]), "loss": loss}), flush=True)


class TorchReference(torch_process.TorchProcess):
  """The torch step in a subprocess, driven line by line (so rounds can be interleaved)."""

  def __init__(self, python: str, args, height: int, width: int, dtype: str, device: str):
    super().__init__(python, __file__,
                     ["--torch_worker", f"--arch={args.arch}", f"--pairs={args.pairs}",
                      f"--sizes={height}x{width}", f"--seed={args.seed}", f"--dtype={dtype}",
                      f"--torch_device={device}",
                      f"--torch_memory_format={args.torch_memory_format}"]
                     + (["--torch_compile"] if args.torch_compile else []),
                     args.torch_omp_wait_policy if device == "cpu" else "")

  def run(self, steps: int) -> float:
    """Runs `steps` consecutive torch steps; returns seconds per step."""
    return self.request(f"run {steps}")["seconds"] / steps


# ------------------------------------------------------------------------------------------------
# Ours.
# ------------------------------------------------------------------------------------------------


def _flops(cost) -> float:
  """The 'flops' entry of a cost_analysis() result (a dict, or one dict per computation)."""
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  value = float((cost or {}).get("flops", float("nan")))
  return value if value > 0 else float("nan")


def build_jax_step(arch: str, pairs: int, height: int, width: int, conv: str, dtype: str,
                   seed: int):
  """Compiled train step of configs/msls.py with `conv` ("native" or "cpu_conv") convolutions.

  Returns (run, info): run(n) performs n consecutive steps (state carried inside), blocks, and
  returns the seconds they took; info holds compile seconds and XLA's FLOP counts.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from configs import msls  # pylint: disable=g-import-not-at-top
  from gcl_jax.models import build_model, cpu_conv  # pylint: disable=g-import-not-at-top
  from gcl_jax import parallel  # pylint: disable=g-import-not-at-top
  from gcl_jax.train import state as state_lib  # pylint: disable=g-import-not-at-top
  from gcl_jax.train import step as step_lib  # pylint: disable=g-import-not-at-top

  config = msls.get_config()
  config.seed = seed
  config.model.arch = arch
  config.model.dtype = dtype
  config.model.cpu_conv = False  # chosen explicitly below
  config.data.image_size = (height, width)
  config.train.batch_size = pairs
  config.train.grad_accum_steps = 1
  config.optimizer.name = "sgd"
  config.optimizer.schedule = "constant"
  config.optimizer.learning_rate = 0.1
  mesh = parallel.make_mesh(1)
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
  batch = parallel.global_batch(local, mesh)
  t0 = time.perf_counter()
  lowered = step.lower(state, batch)
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t0
  flops_compiled = _flops(compiled.cost_analysis())
  try:
    flops_lowered = _flops(lowered.cost_analysis())
  except Exception:  # pylint: disable=broad-except  (not every backend analyses HLO unoptimised)
    flops_lowered = float("nan")
  # The compiled count is the headline; the unoptimised program's count stands in where the
  # compiled one is missing or far below it (a backend that does not count its library calls).
  if flops_compiled == flops_compiled and not flops_compiled < 0.8 * flops_lowered:
    flops, source = flops_compiled, "XLA cost_analysis()['flops'] of the compiled step"
  else:
    flops, source = flops_lowered, "XLA cost_analysis()['flops'] of the lowered (unoptimised) step"
  holder = {"state": state}

  def run(n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
      holder["state"], metrics = compiled(holder["state"], batch)
    jax.block_until_ready((holder["state"], metrics))  # nothing left running during torch's turn
    return time.perf_counter() - t

  t0 = time.perf_counter()
  holder["state"], metrics = compiled(holder["state"], batch)
  loss = float(metrics["loss"])
  first_s = time.perf_counter() - t0
  if not np.isfinite(loss):
    raise FloatingPointError(f"{arch} {dtype} {conv}: first step's loss is {loss}")
  return run, {"compile_s": compile_s, "first_step_s": first_s, "flops": flops,
               "flops_source": source, "flops_compiled": flops_compiled,
               "flops_lowered": flops_lowered, "loss": loss}


def _variants(choice: str, backend: str) -> list[str]:
  if choice == "auto":
    choice = "both" if backend == "cpu" else "off"
  return {"off": ["native"], "on": ["cpu_conv"], "both": ["native", "cpu_conv"]}[choice]


def bench_config(args, dtype: str, height: int, width: int, torch_python: str | None) -> dict:
  """Measures every variant (and torch) at one dtype and size, interleaved; returns a summary."""
  import jax  # pylint: disable=g-import-not-at-top
  from gcl_jax.models import cpu_conv  # pylint: disable=g-import-not-at-top

  backend = jax.default_backend()
  device = jax.devices()[0]
  size = f"{height}x{width}"
  common = {"arch": args.arch, "size": size, "pairs": args.pairs, "dtype": dtype}
  runners, infos = {}, {}
  for conv in _variants(args.cpu_conv, backend):
    runners[conv], infos[conv] = build_jax_step(args.arch, args.pairs, height, width, conv, dtype,
                                                args.seed)
    emit(kind="compile", conv=conv, **common, **infos[conv])
    for _ in range(args.warmup):
      runners[conv](1)
  ref, torch_error = None, None
  if torch_python:
    torch_device = args.torch_device
    if torch_device == "auto":
      torch_device = "cuda" if backend == "gpu" else "cpu"
    try:
      ref = TorchReference(torch_python, args, height, width, dtype, torch_device)
      emit(kind="torch_ready", python=torch_python, **common, **ref.info)
    except (RuntimeError, ValueError) as e:  # measure ours all the same; say why torch is absent
      ref, torch_error = None, f"torch worker failed to start on {torch_device}: {e}"
      emit(kind="torch_error", error=torch_error, **common)
  times = {k: [] for k in list(runners) + (["torch"] if ref else [])}
  try:
    for r in range(args.rounds):
      for conv, run in runners.items():
        times[conv].append(run(args.iters) / args.iters)
      if ref:
        times["torch"].append(ref.run(args.iters))
      emit(kind="round", round=r, step_s={k: v[-1] for k, v in times.items()}, **common)
  finally:
    if ref:
      ref.close()
  flops_ref = infos.get("native", next(iter(infos.values())))["flops"]
  device_kind = device.device_kind
  result = {}
  for name, ts in times.items():
    step_s = statistics.median(ts)
    flops = infos[name]["flops"] if name in infos else flops_ref
    util = peaks.mfu(flops / step_s, device_kind, dtype, backend)
    result[name] = {"step_s": step_s, "pairs_per_s": args.pairs / step_s,
                    "flops_per_step": flops, "flop_per_s": flops / step_s, **util}
    emit(kind="measurement", impl=name, rounds=len(ts), iters_per_round=args.iters, **common,
         **result[name])
  picked = "cpu_conv" if cpu_conv.conv_for_platform() is cpu_conv.conv_general_dilated else "native"
  ours = picked if picked in result else next(iter(runners))
  mine = result[ours]
  summary = {
      **common, "ours": ours, "backend": backend, "device": mine["device"],
      "device_kind": device_kind, "jax": jax.__version__,
      "pairs_per_s": mine["pairs_per_s"], "step_s": mine["step_s"],
      "flops_per_step": mine["flops_per_step"], "flop_per_s": mine["flop_per_s"],
      "flops_source": infos[ours]["flops_source"],
      "flops_compiled": infos[ours]["flops_compiled"],
      "flops_lowered": infos[ours]["flops_lowered"],
      "mfu": mine["mfu"], "peak_flop_per_s": mine["peak_flop_per_s"],
      "peak_source": mine["peak_source"],
      "compile_s": {k: v["compile_s"] for k, v in infos.items()},
      "loadavg_1min": os.getloadavg()[0], "cpus": os.cpu_count(),
  }
  if "mfu_tf32" in mine:
    summary["mfu_tf32"] = mine["mfu_tf32"]
  for conv in runners:
    summary[f"{conv}_pairs_per_s"] = result[conv]["pairs_per_s"]
  if "native" in result and "cpu_conv" in result:
    summary["cpu_conv_speedup"] = (result["cpu_conv"]["pairs_per_s"]
                                   / result["native"]["pairs_per_s"])
  if "torch" in result:
    theirs = result["torch"]
    summary.update({
        "torch_pairs_per_s": theirs["pairs_per_s"], "torch_step_s": theirs["step_s"],
        "torch_flop_per_s": theirs["flop_per_s"], "torch_mfu": theirs["mfu"],
        "torch": ref.info.get("torch"), "torch_settings": ref.info.get("settings"),
        "ratio": mine["pairs_per_s"] / theirs["pairs_per_s"],
    })
    for conv in runners:
      summary[f"ratio_{conv}"] = result[conv]["pairs_per_s"] / theirs["pairs_per_s"]
  else:
    summary["ratio"] = None
    summary["torch"] = torch_error or ("not measured (--no_torch, or no torch + torchvision at "
                                       f"--torch_python={args.torch_python!r})")
  return summary


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--arch", default="resnet50",
                      help="backbone: resnet18/34/50/101/152, resnext101_32x8d, vgg16")
  parser.add_argument("--pairs", type=int, default=4, help="pairs per step (2x images)")
  parser.add_argument("--sizes", default="224x224,480x640", help="comma-separated HxW")
  parser.add_argument("--dtype", default="float32",
                      help="comma-separated compute dtypes (float32, bfloat16); the last is the "
                      "summary line's")
  parser.add_argument("--iters", type=int, default=2, help="consecutive timed steps per round")
  parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
  parser.add_argument("--warmup", type=int, default=1,
                      help="untimed steps of ours after the first one")
  parser.add_argument("--cpu_conv", choices=("auto", "both", "on", "off"), default="auto",
                      help="XLA's native convolutions, cpu_conv's, or both (auto: both on CPU, "
                      "native elsewhere)")
  parser.add_argument("--torch_python", default=DEFAULT_TORCH_PYTHON,
                      help="interpreter with torch + torchvision for the reference")
  parser.add_argument("--no_torch", action="store_true", help="skip the PyTorch reference")
  parser.add_argument("--torch_device", choices=("auto", "cpu", "cuda"), default="auto",
                      help="auto: cuda when our backend is a GPU, else cpu")
  parser.add_argument("--torch_memory_format", choices=("auto", "channels_last", "contiguous"),
                      default="auto", help="auto: whichever the worker's first steps measure "
                      "faster")
  parser.add_argument("--torch_compile", action="store_true",
                      help="torch.compile the network (compiles for minutes on a GPU)")
  parser.add_argument("--torch_omp_wait_policy", default="PASSIVE",
                      help="OMP_WAIT_POLICY of a CPU torch worker ('' keeps the environment's). "
                      "PASSIVE because on a shared, oversubscribed CPU torch's spinning OpenMP "
                      "threads ran 2-25x slower than with PASSIVE (measured 0.22 s vs 0.5-5.7 s "
                      "per resnet18 step); it never made torch slower in our runs")
  parser.add_argument("--quick", action="store_true",
                      help="resnet18, 112x112, 2 pairs, 1 step x 2 rounds (about a minute)")
  parser.add_argument("--headline", action="store_true",
                      help="the paper's step: resnet50, 480x640, 32 pairs")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--torch_worker", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.quick:
    args.arch, args.pairs, args.sizes, args.iters, args.rounds = "resnet18", 2, "112x112", 1, 2
  if args.headline:
    args.arch, args.pairs, args.sizes = "resnet50", 32, "480x640"
  sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
  dtypes = [d.strip() for d in args.dtype.split(",") if d.strip()]
  if args.pairs < 1 or not sizes or args.iters < 1 or args.rounds < 1:
    parser.error("--pairs, --iters and --rounds must be >= 1 and --sizes non-empty")
  if not dtypes or any(d not in DTYPES for d in dtypes):
    parser.error(f"--dtype must be a comma-separated list of {DTYPES}, got {args.dtype!r}")
  if args.torch_worker:
    torch_worker(args.arch, args.pairs, *sizes[0], args.seed, dtypes[0], args.torch_device,
                 args.torch_memory_format, args.torch_compile)
    return
  sys.path.insert(0, REPO)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  torch_python = None if args.no_torch else find_torch(args.torch_python)
  if torch_python:  # leave GPU memory to the torch worker (set before JAX starts its backend)
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.45")
  summaries = []
  for dtype in dtypes:
    for h, w in sizes:
      summaries.append(bench_config(args, dtype, h, w, torch_python))
      if len(summaries) < len(dtypes) * len(sizes):
        emit(kind="config_summary", **summaries[-1])
  headline = ("dtype", "size", "pairs_per_s", "flop_per_s", "mfu", "torch_pairs_per_s",
              "torch_mfu", "ratio")
  emit(kind="summary", **summaries[-1],
       configs=[{k: s.get(k) for k in headline} for s in summaries])


if __name__ == "__main__":
  main()
