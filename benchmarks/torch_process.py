"""Shared by the benchmarks: JSON output and a PyTorch reference run in another interpreter.

torch is never a dependency of gcl-jax; a benchmark that compares against PyTorch starts itself
under an interpreter that has torch (e.g. a separate Python 3.11 venv) as a worker subprocess and
drives it line by line, so its rounds interleave with ours on the same (noisy) machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

# Interpreter of the PyTorch reference: --torch_python, else $GCL_TORCH_PYTHON (empty: none).
DEFAULT_TORCH_PYTHON = os.environ.get("GCL_TORCH_PYTHON", "")


def emit(**record: Any) -> None:
  """Prints one JSON object per line (the benchmarks' output format)."""
  print(json.dumps(record), flush=True)


def find_torch(python: str | None) -> str | None:
  """`python` (a path, or a command on PATH such as python3) as an absolute path if it imports
  torch and torchvision, else None."""
  python = shutil.which(python) if python else None
  if not python:
    return None
  ok = subprocess.run([python, "-c", "import torch, torchvision"], capture_output=True,
                      check=False)
  return python if ok.returncode == 0 else None


class TorchProcess:
  """`python script args...` as a worker that answers each request line with one JSON line."""

  def __init__(self, python: str, script: str, args: list[str], omp_wait_policy: str = "PASSIVE",
               first_line: str | None = None):
    env = dict(os.environ)
    if omp_wait_policy:  # PyTorch's busy-waiting threads distort timings on a shared machine
      env["OMP_WAIT_POLICY"] = omp_wait_policy
    self.proc = subprocess.Popen([python, os.path.abspath(script), *args], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True, bufsize=1, env=env)
    if first_line is not None:
      self.proc.stdin.write(first_line + "\n")
      self.proc.stdin.flush()
    self.info = self.read()
    self.info["omp_wait_policy"] = env.get("OMP_WAIT_POLICY", "")

  def read(self) -> dict:
    line = self.proc.stdout.readline()
    if not line:
      raise RuntimeError(f"torch worker exited with code {self.proc.wait()}")
    return json.loads(line)

  def request(self, line: str) -> dict:
    self.proc.stdin.write(line + "\n")
    self.proc.stdin.flush()
    return self.read()

  def close(self) -> None:
    if self.proc.poll() is None:
      self.proc.stdin.write("quit\n")
      self.proc.stdin.flush()
      self.proc.wait(timeout=60)
