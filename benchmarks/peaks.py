"""Peak dense FLOP/s of common accelerators, for model-FLOP utilisation (MFU) in the benchmarks.

Numbers are per chip (one GPU, one TPU chip), dense (no 2:4 sparsity), from the vendors'
datasheets: NVIDIA's H100, H200, A100, L4, L40 and L40S datasheets (SXM parts unless the device
name says PCIe or NVL), Google Cloud's TPU system-architecture pages. They are leads, not
measurements: a bf16 matrix product on random data reaches about 80 % of them on an H200.

    bfloat16  tensor-core / MXU rate with bf16 operands and float32 accumulation;
    float32   plain FP32 (CUDA cores) on GPUs;
    tf32      the tensor-core rate for float32 operands rounded to TF32, which XLA and cuDNN use
              for float32 convolutions and matrix products by default on Ampere and newer GPUs.

TPUs publish no float32 rate (XLA runs float32 matrix products there as bf16 passes), and CPUs
have no entry: their MFU is reported as unknown, never guessed.

    python benchmarks/peaks.py               # the table as JSON lines
"""

from __future__ import annotations

import json

TFLOPS = 1e12

# (substring of the lower-cased device name, canonical name, {dtype: TFLOP/s}). First match wins,
# so more specific names come before the names they contain ("h100 pcie" before "h100").
_TABLE: tuple[tuple[str, str, dict[str, float]], ...] = (
    ("gh200", "GH200", {"bfloat16": 989.4, "tf32": 494.7, "float32": 66.9}),
    ("h200 nvl", "H200 NVL", {"bfloat16": 835.5, "tf32": 417.5, "float32": 60.0}),
    ("h200", "H200 SXM", {"bfloat16": 989.4, "tf32": 494.7, "float32": 66.9}),
    ("h100 pcie", "H100 PCIe", {"bfloat16": 756.5, "tf32": 378.0, "float32": 51.2}),
    ("h100 nvl", "H100 NVL", {"bfloat16": 835.5, "tf32": 417.5, "float32": 60.0}),
    ("h100", "H100 SXM", {"bfloat16": 989.4, "tf32": 494.7, "float32": 66.9}),
    ("h800", "H800 SXM", {"bfloat16": 989.4, "tf32": 494.7, "float32": 66.9}),
    ("a100", "A100", {"bfloat16": 312.0, "tf32": 156.0, "float32": 19.5}),
    ("a800", "A800", {"bfloat16": 312.0, "tf32": 156.0, "float32": 19.5}),
    ("l40s", "L40S", {"bfloat16": 362.05, "tf32": 183.0, "float32": 91.6}),
    ("l40", "L40", {"bfloat16": 181.05, "tf32": 90.5, "float32": 90.5}),
    ("l4", "L4", {"bfloat16": 121.0, "tf32": 60.0, "float32": 30.3}),
    ("tpu v6 lite", "TPU v6e", {"bfloat16": 918.0}),
    ("tpu v6e", "TPU v6e", {"bfloat16": 918.0}),
    ("tpu v5 lite", "TPU v5e", {"bfloat16": 197.0}),
    ("tpu v5e", "TPU v5e", {"bfloat16": 197.0}),
    ("tpu v5p", "TPU v5p", {"bfloat16": 459.0}),
    ("tpu v5", "TPU v5p", {"bfloat16": 459.0}),
    ("tpu v4", "TPU v4", {"bfloat16": 275.0}),
    ("tpu v3", "TPU v3", {"bfloat16": 123.0}),
)

SOURCE = "vendor datasheet, dense, per chip (benchmarks/peaks.py)"


def lookup(device_name: str) -> tuple[str | None, dict[str, float]]:
  """Canonical name and {dtype: peak FLOP/s} of a device, or (None, {}) when not in the table.

  Args:
    device_name: `jax.Device.device_kind` ("NVIDIA H200", "TPU v5 lite", "cpu") or
      `torch.cuda.get_device_name()`.

  Returns:
    (canonical name, peaks in FLOP/s by dtype name); CPUs and unknown devices give (None, {}).
  """
  name = (device_name or "").lower()
  for key, canonical, peaks in _TABLE:
    if key in name:
      return canonical, {k: v * TFLOPS for k, v in peaks.items()}
  return None, {}


def mfu(flop_per_s: float, device_name: str, dtype: str, platform: str = "") -> dict:
  """Model-FLOP utilisation of a measured rate against the device's peak for `dtype`.

  Args:
    flop_per_s: achieved FLOP/s (a FLOP count / measured seconds).
    device_name: as for `lookup`.
    dtype: "bfloat16" or "float32": the compute dtype of the measured program.
    platform: "cpu", "gpu", "tpu" (jax.default_backend()); a CPU is always "unknown".

  Returns:
    {"device": canonical name or the given name, "peak_dtype", "peak_flop_per_s" (None when
    unknown), "mfu" (fraction, None when unknown), "peak_source" (where the peak comes from, or
    why there is none)} and, for float32 on GPUs, "mfu_tf32" against the TF32 tensor-core peak.
  """
  canonical, peaks = lookup(device_name)
  out = {"device": canonical or device_name, "peak_dtype": dtype, "peak_flop_per_s": None,
         "mfu": None}
  if platform.lower() == "cpu" or canonical is None:
    out["peak_source"] = f"unknown: no peak for {device_name!r} (CPUs and unlisted devices)"
    return out
  peak = peaks.get(dtype)
  if peak is None:
    out["peak_source"] = f"unknown: no published {dtype} peak for {canonical}"
  else:
    out["peak_flop_per_s"] = peak
    out["mfu"] = flop_per_s / peak
    out["peak_source"] = f"{canonical} {dtype} {peak / TFLOPS:g} TFLOP/s, {SOURCE}"
  if dtype == "float32" and "tf32" in peaks:
    out["peak_tf32_flop_per_s"] = peaks["tf32"]
    out["mfu_tf32"] = flop_per_s / peaks["tf32"]
  return out


def main() -> None:
  for key, canonical, peaks in _TABLE:
    print(json.dumps({"match": key, "device": canonical, "tflop_per_s": peaks}))


if __name__ == "__main__":
  main()
