"""Training across processes for real: 2 processes x 2 CPU devices (gloo collectives, coordinator
on a local port) against 1 process x 4 devices, on the tiny config of tests/test_resume.py.

The two layouts run the same XLA program on a 4-device mesh over the same global batches (each
process reads its slice, pipeline.host_indices); only the all-reduce differs (gloo across
processes, in-process otherwise) and may add its terms in another order. So losses are compared
to 1e-5 relative, parameters to 1e-5 absolute, 1% of one step of lr 1e-3 (Adam divides each
update by the root of its second moment, so for a weight whose gradient is near zero a difference
in the last float32 bits of the gradient changes the update's size; measured: 1.3e-6 at most
after 12 steps, on 1 weight of 9216 or 36864), and runs of the SAME layout (an interrupted one and
an uninterrupted one) must agree bitwise.
"""

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from gcl_jax import parallel, synthetic
from test_resume import TINY_WORLD, losses

WORKER = pathlib.Path(__file__).resolve().parent / "multiprocess_worker.py"
STEPS = 12  # checkpoints every 2 steps (resume_config); evaluation after training
RTOL = 1e-5


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def start(world, workdir, out, *, processes: int, devices: int) -> list[subprocess.Popen]:
  """`processes` workers of one run (one process: no coordinator at all)."""
  args = [sys.executable, str(WORKER), world, str(workdir), str(out), str(STEPS), str(devices)]
  if processes == 1:
    return [subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)]
  address = f"127.0.0.1:{free_port()}"
  return [subprocess.Popen(args + [address, str(processes), str(i)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE) for i in range(processes)]


def finish(procs: list[subprocess.Popen], timeout: float = 600) -> None:
  deadline = time.time() + timeout
  for p in procs:
    try:
      _, err = p.communicate(timeout=max(deadline - time.time(), 1))
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
    assert p.returncode == 0, err.decode()[-3000:]


def run(world, workdir, out, *, processes: int, devices: int) -> list[dict]:
  finish(start(world, workdir, out, processes=processes, devices=devices))
  return [json.loads((pathlib.Path(out) / f"p{i}.json").read_text()) for i in range(processes)]


def params(out, process: int = 0) -> dict[str, np.ndarray]:
  with np.load(pathlib.Path(out) / f"params_p{process}.npz") as z:
    return dict(z)


def checkpoint_steps(workdir) -> list[int]:
  names = os.listdir(pathlib.Path(workdir) / "checkpoints")
  assert all(n.isdigit() for n in names), f"unfinished checkpoint left: {names}"
  return sorted(int(n) for n in names)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> str:
  root = str(tmp_path_factory.mktemp("world") / "msls")
  return synthetic.generate_world(root, synthetic.WorldConfig(**TINY_WORLD), progress=False)


@pytest.fixture(scope="module")
def reference(world, tmp_path_factory):
  """The uninterrupted runs: 1 process x 4 devices, and 2 processes x 2 devices."""
  base = tmp_path_factory.mktemp("reference")
  single = run(world, base / "single", base / "out_single", processes=1, devices=4)
  multi = run(world, base / "multi", base / "out_multi", processes=2, devices=2)
  return base, single, multi


def assert_losses_close(actual: dict, expected: dict) -> None:
  assert sorted(actual) == sorted(expected)
  np.testing.assert_allclose([actual[s] for s in sorted(actual)],
                             [expected[s] for s in sorted(expected)], rtol=RTOL)


@pytest.mark.slow
def test_two_processes_train_and_evaluate_as_one(reference):
  base, (single,), multi = reference
  assert [m["process_count"] for m in multi] == [2, 2] and single["process_count"] == 1
  assert [m["step"] for m in multi] == [STEPS, STEPS]
  # Per-step losses (process 0's metrics.jsonl) and final parameters of 2 x 2 == 1 x 4.
  assert_losses_close(losses(base / "multi"), losses(base / "single"))
  reference_params = params(base / "out_single")
  for process in (0, 1):
    got = params(base / "out_multi", process)
    assert sorted(got) == sorted(reference_params)
    for k, v in reference_params.items():
      np.testing.assert_allclose(got[k], v, rtol=0, atol=1e-5, err_msg=k)
  # Extraction and evaluation: every process returns the single-process recall.
  expected = single["results"]["trained"]
  for m in multi:
    got = m["results"]["trained"]
    for key in [k for k in expected if k.startswith("recall@")]:
      assert got[key] == expected[key], key
  # The cache files of the queries and of the database of the one validation city (their keys
  # name the workdir, so pair them by size).
  multi_desc = sorted((np.load(f) for f in (base / "multi" / "descriptors").glob("*.npy")),
                      key=len)
  single_desc = sorted((np.load(f) for f in (base / "single" / "descriptors").glob("*.npy")),
                       key=len)
  assert [len(d) for d in multi_desc] == [len(d) for d in single_desc] and len(multi_desc) == 2
  for a, b in zip(multi_desc, single_desc):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_only_process_zero_writes_and_checkpoints_are_written_once(reference):
  base, _, multi = reference
  assert multi[1]["writes"] == [], multi[1]["writes"]
  written = {pathlib.Path(p).name for p in multi[0]["writes"]}
  assert {"config.json", "metrics.jsonl", "results.json"} <= written
  assert checkpoint_steps(base / "multi") == [8, 10, 12]  # every 2 steps, the last 3 kept
  records = [json.loads(line) for line in (base / "multi" / "metrics.jsonl").read_text()
             .splitlines()]
  assert [r["step"] for r in records] == list(range(1, STEPS + 1))  # one line per step, once


@pytest.mark.slow
def test_sigterm_to_one_process_saves_everywhere_at_one_step_and_resumes(world, reference,
                                                                         tmp_path):
  base, _, _ = reference
  workdir, out = tmp_path / "preempted", tmp_path / "out"
  procs = start(world, workdir, out, processes=2, devices=2)
  metrics = workdir / "metrics.jsonl"
  deadline = time.time() + 300
  while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
    assert time.time() < deadline and all(p.poll() is None for p in procs), "no 3 steps logged"
    time.sleep(0.1)
  procs[1].send_signal(signal.SIGTERM)  # only process 1 is told
  finish(procs)
  stopped = [json.loads((out / f"p{i}.json").read_text())["step"] for i in (0, 1)]
  assert stopped[0] == stopped[1] < STEPS, stopped  # both stopped at one step ...
  assert checkpoint_steps(workdir)[-1] == stopped[0]  # ... and saved it
  interrupted = dict(losses(workdir))

  # Resumed by 2 processes: bitwise the uninterrupted 2-process run.
  shutil.copytree(workdir, tmp_path / "other_count")
  run(world, workdir, tmp_path / "out_resumed", processes=2, devices=2)
  assert losses(workdir) == losses(base / "multi")
  assert {s: interrupted[s] for s in interrupted} == {s: losses(base / "multi")[s]
                                                      for s in interrupted}
  np.testing.assert_array_equal(params(tmp_path / "out_resumed")["['pool']['p']"],
                                params(base / "out_multi")["['pool']['p']"])

  # Resumed by 1 process x 4 devices: the same global batches, the 1-process numbers.
  run(world, tmp_path / "other_count", tmp_path / "out_other", processes=1, devices=4)
  assert_losses_close(losses(tmp_path / "other_count"), losses(base / "single"))


def test_detect_launch_single_process_never_initializes():
  assert parallel.detect_launch(environ={}) is None
  assert parallel.detect_launch(environ={"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}) is None
  assert parallel.detect_launch(environ={"SLURM_STEP_NUM_TASKS": "1"}) is None
  assert parallel.detect_launch(coordinator_address="h:1", num_processes=1, process_id=0,
                                environ={}) is None
  assert parallel.detect_launch(distributed="off", environ={"SLURM_STEP_NUM_TASKS": "8"}) is None


def test_detect_launch_explicit_and_cluster():
  launch = parallel.detect_launch(coordinator_address="10.0.0.1:1234", num_processes=4,
                                  process_id=3, environ={})
  assert dict(launch.kwargs) == {"coordinator_address": "10.0.0.1:1234", "num_processes": 4,
                                 "process_id": 3}
  env = {"JAX_COORDINATOR_ADDRESS": "h:9", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}
  assert dict(parallel.detect_launch(environ=env).kwargs)["process_id"] == 1
  slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NTASKS": "16",
           "SLURM_STEP_NUM_TASKS": "16", "SLURM_PROCID": "5", "SLURM_LOCALID": "5"}
  launch = parallel.detect_launch(environ=slurm)
  assert dict(launch.kwargs) == {} and "SLURM (16 tasks" in launch.how  # JAX reads SLURM itself
  assert "Open MPI" in parallel.detect_launch(environ={"OMPI_COMM_WORLD_SIZE": "2"}).how
  assert dict(parallel.detect_launch(distributed="on", environ={}).kwargs) == {}


@pytest.mark.parametrize("kwargs, env, message", [
    (dict(coordinator_address="h:1"), {}, "without --num_processes or $JAX_NUM_PROCESSES and "
                                          "--process_id or $JAX_PROCESS_ID"),
    ({}, {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2"}, "without --process_id"),
    (dict(coordinator_address="h:1", num_processes=2, process_id=2), {}, "process_id 2 is not"),
    ({}, {"SLURM_STEP_NUM_TASKS": "4", "SLURM_JOB_ID": "1"}, "without SLURM_STEP_NODELIST, "
                                                            "SLURM_NTASKS, SLURM_PROCID"),
    (dict(distributed="off", process_id=1), {}, "contradicts"),
    (dict(distributed="sometimes"), {}, "must be one of"),
])
def test_detect_launch_incomplete_names_what_is_missing(kwargs, env, message):
  with pytest.raises(parallel.DistributedError, match=message.replace("$", r"\$")):
    parallel.detect_launch(environ=env, **kwargs)


def test_unreachable_coordinator_stops_with_the_launch_named(tmp_path):
  script = ("import jax, sys\n"
            "from gcl_jax import parallel\n"
            "launch = parallel.detect_launch(coordinator_address='127.0.0.1:1', num_processes=2,"
            " process_id=1, environ={})\n"
            "launch = parallel.Launch(launch.how, {**launch.kwargs, 'initialization_timeout': 3})\n"
            "try:\n"
            "  parallel.initialize_distributed(launch)\n"
            "except parallel.DistributedError as e:\n"
            "  print('ERROR', e); sys.exit(3)\n")
  repo = pathlib.Path(__file__).resolve().parents[1]
  proc = subprocess.run([sys.executable, "-c", script], cwd=repo, capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == 3, proc.stderr[-2000:]
  assert "the coordinator 127.0.0.1:1 (process 0) did not answer within 3 s for the launch of " \
         "coordinator 127.0.0.1:1, process 1 of 2" in proc.stdout
