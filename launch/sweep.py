"""Expands a named sweep (configs/sweeps.py) into main.py runs and prints, runs or submits them.

    python launch/sweep.py --config=configs/msls.py --sweep=loss_margin --workdir_root=runs/sweep
    python launch/sweep.py --config=configs/demo.py --sweep=seeds --workdir_root=runs/seeds \
        --launcher=local --config.train.num_steps=100      # extra overrides apply to every run
    python launch/sweep.py --config=configs/msls.py --sweep=loss_margin \
        --workdir_root=/shared/runs/lm --launcher=slurm --sbatch_args="--nodes=1"

One run per grid point: `python main.py --config=<config> --config.<key>=<value> ...
--workdir=<workdir_root>/<run name>`, with the run name made of the overrides in sweep order,
e.g. `loss.name=gcl,loss.margin=0.3` (deterministic, so a re-launched sweep resumes each run
from its own workdir). Launchers: `print` (default) prints the commands, one per line; `local`
runs them one after the other here; `slurm` submits each with `sbatch launch/slurm.sbatch`.

Before anything is printed or started, every override is checked against the config: each key
must exist (the error names it) and every command's flags are parsed exactly as main.py parses
them (ml_collections config_flags, locked config), so a wrong type fails here, not on a cluster.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import posixpath
import re
import shlex
import subprocess
import sys
from typing import Any, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

from absl import flags  # noqa: E402  pylint: disable=g-import-not-at-top
import ml_collections  # noqa: E402  pylint: disable=g-import-not-at-top

from configs import sweeps  # noqa: E402  pylint: disable=g-import-not-at-top
from gcl_jax import cli  # noqa: E402  pylint: disable=g-import-not-at-top

SBATCH_SCRIPT = os.path.join("launch", "slurm.sbatch")
LAUNCHERS = ("print", "local", "slurm")

_CLI = cli.Command("launch/sweep.py", __doc__)


@dataclasses.dataclass(frozen=True)
class Run:
  """One point of a sweep."""
  name: str  # e.g. "loss.name=gcl,loss.margin=0.3"
  overrides: dict[str, Any]  # dotted config key -> value (sweep point, then extra overrides)
  workdir: str
  main_args: tuple[str, ...]  # arguments of main.py

  def command(self, python: str = "python") -> list[str]:
    return [python, "main.py", *self.main_args]


def format_value(value: Any) -> str:
  """A value as ml_collections' config flags parse it (`--config.key=<text>`)."""
  if isinstance(value, bool):
    return str(value)
  if isinstance(value, (tuple, list)):
    return "(" + ",".join(format_value(v) for v in value) + ("," if len(value) == 1 else "") + ")"
  return str(value)


def run_name(overrides: dict[str, Any]) -> str:
  """Deterministic, file-system safe name: 'k1=v1,k2=v2' in override order."""
  text = ",".join(f"{k}={format_value(v)}" for k, v in overrides.items())
  return re.sub(r"[^A-Za-z0-9._,=+-]", "_", text) or "default"


def load_config(config_arg: str) -> ml_collections.ConfigDict:
  """Loads `path/to/config.py[:preset]` the way main.py does (get_config(preset))."""
  path, _, preset = config_arg.partition(":")
  full = path if os.path.isabs(path) else os.path.join(REPO, path)
  if not os.path.isfile(full):
    raise FileNotFoundError(f"config file {path!r} not found (looked at {full})")
  spec = importlib.util.spec_from_file_location(f"_sweep_config_{abs(hash(full))}", full)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(preset or None)


def check_key(config: ml_collections.ConfigDict, key: str, config_arg: str) -> None:
  """Raises KeyError naming `key` (and what exists at that level) if it is not in `config`."""
  node: Any = config
  parts = key.split(".")
  for i, part in enumerate(parts):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      where = ".".join(parts[:i]) or "<top level>"
      choices = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
      raise KeyError(f"override key {key!r} does not exist in {config_arg}: no {part!r} under "
                     f"{where} (has: {', '.join(choices)})")
    node = node[part]


def parse_main_args(main_args: Sequence[str]) -> ml_collections.ConfigDict:
  """Parses --config / --config.* flags exactly as main.py does; returns the resulting config."""
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

  argv = ["main.py", *main_args]
  fv = flags.FlagValues()
  # The override flags (--config.a.b) are declared from sys_argv when the config is loaded.
  config_flags.DEFINE_config_file("config", None, "config", flag_values=fv, lock_config=True,
                                  sys_argv=argv)
  flags.DEFINE_string("workdir", None, "workdir", flag_values=fv)
  flags.DEFINE_string("mode", "train", "mode", flag_values=fv)
  cwd = os.getcwd()
  os.chdir(REPO)  # config paths are relative to the repository, as for main.py
  try:
    fv(argv)
    return fv.config
  except flags.Error as e:
    raise ValueError(f"main.py would reject {' '.join(main_args)!r}: {e}") from e
  finally:
    os.chdir(cwd)


def parse_extra(extra: Sequence[str]) -> dict[str, str]:
  """['--config.a.b=1', ...] -> {'a.b': '1'}; anything else is an error."""
  out = {}
  for arg in extra:
    m = re.fullmatch(r"--config\.([A-Za-z0-9_.]+)=(.*)", arg)
    if not m:
      raise ValueError(f"unexpected argument {arg!r}: only --config.<key>=<value> overrides are "
                       "passed through to every run")
    out[m.group(1)] = m.group(2)
  return out


def expand(config_arg: str, sweep: str, workdir_root: str,
           extra: dict[str, Any] | None = None, validate: bool = True) -> list[Run]:
  """The runs of `sweep` applied to `config_arg`, checked against the config.

  Args:
    config_arg: config file with optional preset, e.g. "configs/msls.py:contrastive".
    sweep: name of a sweep in configs/sweeps.py.
    workdir_root: directory (local or gs://) under which each run gets <root>/<run name>.
    extra: overrides added to every run (not part of the run name).
    validate: also parse each run's flags as main.py does (slower; catches wrong types).

  Raises:
    KeyError: an override key is not in the config (the message names it).
    ValueError: unknown sweep, or main.py's flag parser rejects a run's flags.
  """
  extra = dict(extra or {})
  points = sweeps.get_sweep(sweep)
  config = load_config(config_arg)
  for key in list(points[0] if points else {}) + list(extra):
    check_key(config, key, config_arg)
  runs = []
  for point in points:
    name = run_name(point)
    workdir = posixpath.join(workdir_root, name)
    overrides = {**point, **extra}
    main_args = (f"--config={config_arg}",
                 *(f"--config.{k}={format_value(v)}" for k, v in overrides.items()),
                 f"--workdir={workdir}")
    if validate:
      parsed = parse_main_args(main_args)
      for key, value in point.items():
        got = parsed
        for part in key.split("."):
          got = got[part]
        if got != value and not (isinstance(value, (tuple, list)) and tuple(got) == tuple(value)):
          raise ValueError(f"run {name}: {key} parsed as {got!r}, expected {value!r}")
    runs.append(Run(name, overrides, workdir, main_args))
  names = [r.name for r in runs]
  if len(set(names)) != len(names):
    raise ValueError(f"sweep {sweep!r} has duplicate run names: {names}")
  return runs


def launch(runs: Sequence[Run], launcher: str, sweep: str, sbatch_args: str = "") -> int:
  """Prints, runs (sequentially) or submits `runs`; returns a process exit code."""
  if launcher == "print":
    for run in runs:
      print(shlex.join(run.command()))
    return 0
  if launcher == "local":
    failed = []
    for i, run in enumerate(runs):
      print(f"[{i + 1}/{len(runs)}] {run.name}", flush=True)
      rc = subprocess.run(run.command(sys.executable), cwd=REPO, check=False).returncode
      if rc:
        failed.append(f"{run.name} (exit {rc})")
    if failed:
      print("failed runs: " + "; ".join(failed), file=sys.stderr)
    return 1 if failed else 0
  if launcher == "slurm":
    rc = 0
    for i, run in enumerate(runs):
      cmd = ["sbatch", f"--job-name=gcl-{sweep}-{i}", *shlex.split(sbatch_args), SBATCH_SCRIPT,
             *run.main_args]
      print(shlex.join(cmd), flush=True)
      rc = max(rc, subprocess.run(cmd, cwd=REPO, check=False).returncode)
    return rc
  raise ValueError(f"unknown launcher {launcher!r}; choose {', '.join(LAUNCHERS)}")


def _define_flags() -> flags.FlagValues:
  """The command line's flags, on their own FlagValues (parse_main_args builds main.py's)."""
  fv = flags.FlagValues()
  flags.DEFINE_string("config", None, "configs/x.py[:preset]", flag_values=fv, required=True)
  flags.DEFINE_string("sweep", None, f"one of {', '.join(sorted(sweeps.SWEEPS))}",
                      flag_values=fv, required=True)
  flags.DEFINE_string("workdir_root", None, "runs go to <root>/<run name>", flag_values=fv,
                      required=True)
  flags.DEFINE_enum("launcher", "print", LAUNCHERS, "print the commands, run them here one "
                    "after the other, or submit each with sbatch", flag_values=fv)
  flags.DEFINE_string("sbatch_args", "", "extra sbatch options (slurm launcher)",
                      flag_values=fv)
  return fv


def main(argv: Sequence[str] | None = None) -> int:
  """Command-line entry point.

  Args:
    argv: the arguments after the program name (default sys.argv[1:]).

  Returns:
    The exit status: 0 when every run succeeded (or was printed / submitted), 2 on a bad
    command line or override (before anything starts), else the failing runs' status.
  """
  fv = _define_flags()
  extra = _CLI.parse(fv, argv, positional=True, known_only=True)
  if isinstance(extra, int):
    return extra
  try:
    runs = expand(fv.config, fv.sweep, fv.workdir_root, parse_extra(extra))
  except (KeyError, ValueError, FileNotFoundError) as e:
    msg = e.args[0] if isinstance(e, KeyError) and e.args else e
    return _CLI.error(str(msg), 2)
  return launch(runs, fv.launcher, fv.sweep, fv.sbatch_args)


if __name__ == "__main__":
  cli.run(main)
