"""launch/: sweep expansion, run names, key validation, commands main.py accepts, shell syntax."""

import importlib.util
import os
import shlex
import shutil
import stat
import subprocess
import sys

import pytest

from configs import sweeps

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_sweep_module():
  spec = importlib.util.spec_from_file_location("launch_sweep", os.path.join(REPO, "launch",
                                                                             "sweep.py"))
  module = importlib.util.module_from_spec(spec)
  sys.modules["launch_sweep"] = module  # dataclasses look their module up there
  spec.loader.exec_module(module)
  return module


sweep = _load_sweep_module()


def test_get_sweep_is_the_grid_in_order():
  runs = sweeps.get_sweep("loss_margin")
  assert runs == [{"loss.name": n, "loss.margin": m}
                  for n in ("gcl", "contrastive") for m in (0.3, 0.5, 0.7)]
  assert len(sweeps.get_sweep("backbones")) == 5 * 3
  with pytest.raises(ValueError, match="unknown sweep 'nope'"):
    sweeps.get_sweep("nope")


def test_run_names_are_deterministic_and_safe():
  assert sweep.run_name({"loss.name": "gcl", "loss.margin": 0.3}) == "loss.name=gcl,loss.margin=0.3"
  assert sweep.run_name({"data.image_size": (480, 640)}) == "data.image_size=_480,640_"
  runs = sweep.expand("configs/msls.py", "loss_margin", "runs/sweep", validate=False)
  assert [r.name for r in runs] == [r.name for r in sweep.expand("configs/msls.py", "loss_margin",
                                                                  "runs/sweep", validate=False)]
  assert runs[0].workdir == "runs/sweep/loss.name=gcl,loss.margin=0.3"
  assert runs[-1].workdir == "runs/sweep/loss.name=contrastive,loss.margin=0.7"
  gs = sweep.expand("configs/msls.py", "seeds", "gs://bucket/r", validate=False)
  assert [r.workdir for r in gs] == ["gs://bucket/r/seed=0", "gs://bucket/r/seed=1",
                                     "gs://bucket/r/seed=2"]


def test_every_key_of_every_sweep_exists_in_default_config():
  config = sweep.load_config("configs/default.py")
  for name in sweeps.SWEEPS:
    for key in sweeps.SWEEPS[name]:
      sweep.check_key(config, key, "configs/default.py")


def test_unknown_key_is_named(monkeypatch):
  monkeypatch.setitem(sweeps.SWEEPS, "typo", {"loss.margn": (0.1, 0.2)})
  with pytest.raises(KeyError, match="'loss.margn'.*no 'margn' under loss"):
    sweep.expand("configs/msls.py", "typo", "runs")
  with pytest.raises(KeyError, match="'trian.num_steps'"):
    sweep.expand("configs/msls.py", "seeds", "runs", extra={"trian.num_steps": "1"})


def test_printed_commands_parse_into_the_config(capsys):
  """Each printed command, split as a shell would, parses with main.py's flags to its point."""
  assert sweep.main(["--config=configs/msls.py:contrastive", "--sweep=loss_margin",
                     "--workdir_root=runs/sweep", "--config.train.num_steps=7"]) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  points = sweeps.get_sweep("loss_margin")
  assert len(lines) == len(points)
  for line, point in zip(lines, points):
    argv = shlex.split(line)
    assert argv[:2] == ["python", "main.py"]
    config = sweep.parse_main_args(argv[2:])
    assert config.loss.name == point["loss.name"]
    assert config.loss.margin == pytest.approx(point["loss.margin"])
    assert config.train.num_steps == 7
    assert argv[-1] == f"--workdir=runs/sweep/{sweep.run_name(point)}"


def test_bad_override_type_fails_before_launch(capsys):
  rc = sweep.main(["--config=configs/msls.py", "--sweep=seeds", "--workdir_root=r",
                   "--config.train.num_steps=1.5"])
  assert rc == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("launch/sweep.py: error: ") and "num_steps" in err[0]


@pytest.mark.parametrize("argv, message", [
    (["--sweep=seeds", "--workdir_root=r"], "flag --config=None: Flag --config must have a value"),
    (["--config=configs/msls.py", "--sweep=seeds", "--workdir_root=r", "--launcher=ssh"],
     "flag --launcher=ssh: value should be one of <print|local|slurm>"),
    (["--config=configs/msls.py", "--sweep=seeds", "--workdir_root=r", "--sweeep=x"],
     "unexpected argument '--sweeep=x'"),
    (["--config=configs/msls.py", "--sweep=nope", "--workdir_root=r"], "unknown sweep 'nope'"),
])
def test_bad_command_line_is_one_line(capsys, argv, message):
  assert sweep.main(argv) == 2
  captured = capsys.readouterr()
  err = captured.err.strip().splitlines()
  assert captured.out == "" and len(err) == 1, err
  assert err[0].startswith("launch/sweep.py: error: ") and message in err[0]


def test_help_lists_the_flags(capsys):
  assert sweep.main(["--help"]) == 0
  out = capsys.readouterr().out
  for flag in ("--config", "--sweep", "--workdir_root", "--launcher", "--sbatch_args"):
    assert flag in out, flag


def test_slurm_launcher_submits_each_run(tmp_path, monkeypatch):
  log = tmp_path / "sbatch.log"
  fake = tmp_path / "sbatch"
  fake.write_text(f'#!/bin/bash\nprintf "%s\\n" "$*" >> {log}\n')
  fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
  monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
  rc = sweep.main(["--config=configs/msls.py", "--sweep=seeds", "--workdir_root=/shared/r",
                   "--launcher=slurm", "--sbatch_args=--nodes=1 --time=1:00:00"])
  assert rc == 0
  calls = log.read_text().strip().splitlines()
  assert calls[0] == ("--job-name=gcl-seeds-0 --nodes=1 --time=1:00:00 launch/slurm.sbatch "
                      "--config=configs/msls.py --config.seed=0 --workdir=/shared/r/seed=0")
  assert len(calls) == 3


def test_local_launcher_runs_sequentially(monkeypatch):
  seen = []

  class Done:
    returncode = 0

  monkeypatch.setattr(sweep.subprocess, "run", lambda cmd, **kw: seen.append(cmd) or Done())
  assert sweep.main(["--config=configs/msls.py", "--sweep=seeds", "--workdir_root=r",
                     "--launcher=local"]) == 0
  assert [c[:2] for c in seen] == [[sys.executable, "main.py"]] * 3
  assert seen[2][-1] == "--workdir=r/seed=2"


@pytest.mark.parametrize("script", ["tpu_vm.sh", "slurm.sbatch"])
def test_shell_scripts_parse(script):
  path = os.path.join(REPO, "launch", script)
  assert os.access(path, os.X_OK), f"{script} is not executable"
  text = open(path).read()
  assert "set -euo pipefail" in text
  subprocess.run(["bash", "-n", path], check=True)
  if shutil.which("shellcheck"):
    subprocess.run(["shellcheck", "-S", "error", path], check=True)


def test_tpu_script_runs_on_all_workers():
  text = open(os.path.join(REPO, "launch", "tpu_vm.sh")).read()
  assert "--worker=all" in text and "main.py" in text
  for var in ("TPU_NAME", "ZONE", "ACCELERATOR_TYPE", "RUNTIME_VERSION", "CONFIG", "WORKDIR"):
    assert f'{var}="${{{var}:-' in text, var


def test_tpu_script_refuses_local_workdir():
  env = {**os.environ, "WORKDIR": "/tmp/runs", "PATH": "/usr/bin:/bin"}
  out = subprocess.run(["bash", os.path.join(REPO, "launch", "tpu_vm.sh")], env=env,
                       capture_output=True, text=True, check=False)
  assert out.returncode == 2 and "gs://" in out.stderr


def _fake_command(directory, name: str, body: str) -> None:
  path = os.path.join(directory, name)
  with open(path, "w") as f:
    f.write("#!/usr/bin/env bash\n" + body)
  os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)


def test_tpu_script_with_a_fake_gcloud(tmp_path):
  """The whole script against a gcloud that records its calls: VM reused, the checkout copied to
  and installed on every worker, main.py started on all of them with --distributed=on."""
  bin_dir, log = tmp_path / "bin", tmp_path / "gcloud.log"
  bin_dir.mkdir()
  _fake_command(bin_dir, "gcloud", f"""printf '%s\\x1f' "$@" >> {log}; echo >> {log}
if [[ "$*" == *"--format=value(state)"* ]]; then echo READY; fi
""")
  env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "TPU_NAME": "gcl-v4-32",
         "ACCELERATOR_TYPE": "v4-32", "WORKDIR": "gs://bucket/runs/r50",
         "CONFIG": "configs/msls.py:contrastive", "ZONE": "europe-west4-a"}
  out = subprocess.run(["bash", os.path.join(REPO, "launch", "tpu_vm.sh"),
                        "--config.loss.margin=0.7"], env=env, capture_output=True, text=True,
                       check=False, cwd=tmp_path)
  assert out.returncode == 0, out.stderr
  calls = [line.split("\x1f")[:-1] for line in log.read_text().splitlines()]
  assert calls[0][:4] == ["compute", "tpus", "tpu-vm", "describe"] and "gcl-v4-32" in calls[0]
  assert "reusing TPU VM gcl-v4-32 (europe-west4-a)" in out.stdout
  remote = [c for c in calls if c[3] in ("ssh", "scp")]
  assert remote and all("--worker=all" in c and "europe-west4-a" in c for c in remote)
  assert remote[0][3] == "scp"  # the checkout, then the venv, then the run
  commands = [c[c.index("--command") + 1] for c in remote if c[3] == "ssh"]
  assert 'jax[tpu]==$jax_version' in commands[-2].replace("\\", "")
  assert commands[-1].endswith(
      ".venv/bin/python main.py --config=configs/msls.py:contrastive "
      "--workdir=gs://bucket/runs/r50 --mode=train --distributed=on --config.loss.margin=0.7 ")


def test_slurm_script_starts_one_process_per_task_that_joins_the_run(tmp_path):
  """slurm.sbatch under an srun that starts 2 tasks here: each task's Python sees the SLURM
  environment and the variables the script sets, and detect_launch finds a 2-process launch."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  _fake_command(bin_dir, "srun", """shift  # --kill-on-bad-exit=1
for i in 0 1; do
  SLURM_JOB_ID=42 SLURM_STEP_NODELIST=localhost SLURM_NTASKS=2 SLURM_STEP_NUM_TASKS=2 \\
  SLURM_PROCID=$i SLURM_LOCALID=$i "$@" || exit 1
done
""")
  probe = ("import os, sys; from gcl_jax import parallel; "
           "print(parallel.detect_launch().how, '|', ' '.join(sys.argv[1:]), '|', "
           "os.environ['TF_CPP_MIN_LOG_LEVEL'], os.environ['XLA_PYTHON_CLIENT_PREALLOCATE'])")
  _fake_command(bin_dir, "python", f'exec {sys.executable} -c "{probe}" "$@"\n')
  env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
         "PYTHON": str(bin_dir / "python"), "SLURM_SUBMIT_DIR": REPO, "PYTHONPATH": REPO}
  env.pop("TF_CPP_MIN_LOG_LEVEL", None)
  out = subprocess.run(["bash", os.path.join(REPO, "launch", "slurm.sbatch"),
                        "--config=configs/msls.py", "--workdir=/shared/r50"], env=env,
                       capture_output=True, text=True, check=False)
  assert out.returncode == 0, out.stderr
  lines = [line for line in out.stdout.splitlines() if "|" in line]
  assert lines == [f"SLURM (2 tasks, this one {i}) | main.py --config=configs/msls.py "
                   "--workdir=/shared/r50 | 2 false" for i in (0, 1)]
