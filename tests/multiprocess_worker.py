"""One process of a training run on this machine, for tests/test_multiprocess.py.

  python tests/multiprocess_worker.py WORLD WORKDIR OUT NUM_STEPS DEVICES \
      [COORDINATOR NUM_PROCESSES PROCESS_ID]

Trains the tiny config of tests/test_resume.py (evaluating after training) with DEVICES fake CPU
devices in this process, joining a multi-process run through parallel.detect_launch when a
coordinator is given. Writes OUT/p<process>.json: the files this process wrote through gcl_jax.io
and the results; and OUT/params_p<process>.npz: the final parameters as this process holds them.
"""

import json
import os
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top


def main(world, workdir, out, num_steps, devices, coordinator=None, num_processes=None,
         process_id=None):
  jax.config.update("jax_num_cpu_devices", int(devices))
  from gcl_jax import io, parallel  # pylint: disable=g-import-not-at-top
  from gcl_jax.train import train  # pylint: disable=g-import-not-at-top
  from test_resume import resume_config  # pylint: disable=g-import-not-at-top

  parallel.initialize_distributed(parallel.detect_launch(
      coordinator_address=coordinator, process_id=None if process_id is None else int(process_id),
      num_processes=None if num_processes is None else int(num_processes), environ={}))
  writes = []
  for name in ("atomic_write", "append_text"):  # every file the library writes goes through these
    def tracked(p, *args, _inner=getattr(io, name), **kwargs):
      writes.append(str(p))
      return _inner(p, *args, **kwargs)
    setattr(io, name, tracked)
  final = {}
  inner_train = train.train

  def capture(*args, **kwargs):
    final["state"] = inner_train(*args, **kwargs)
    return final["state"]

  train.train = capture
  config = resume_config(world, int(num_steps))
  config.eval.after_training = True
  config.eval.cache_descriptors = True
  results = train.train_and_evaluate(config, workdir)

  index = jax.process_index()
  os.makedirs(out, exist_ok=True)
  params = jax.tree_util.tree_flatten_with_path(final["state"].params)[0]
  np.savez(os.path.join(out, f"params_p{index}.npz"),
           **{jax.tree_util.keystr(k): np.asarray(v.addressable_data(0)) for k, v in params})
  with open(os.path.join(out, f"p{index}.json"), "w", encoding="utf-8") as f:
    json.dump({"writes": writes, "results": results, "process_count": jax.process_count(),
               "step": int(final["state"].step.addressable_data(0))}, f)


if __name__ == "__main__":
  main(*sys.argv[1:])
