"""The pure-numpy stages, the train step, the model, the optimizer and the step benchmark import
no TensorFlow.

Accelerator machines may have JAX and PyTorch but no TensorFlow (tf.data is only the input
pipeline's business), and labelling, reading tables or scoring needs none. Each import runs in a fresh interpreter, since this test session may have
imported TensorFlow already.
"""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Imported in this order in one fresh interpreter; TensorFlow is looked for after each.
IMPORTS = (
    "import gcl_jax.types, gcl_jax.io, gcl_jax.evaluation.metrics",
    "import gcl_jax.labels, gcl_jax.labels.dataset, gcl_jax.labels.calibrate, gcl_jax.labels.plot",
    "import gcl_jax.data.msls, gcl_jax.data.at_format, gcl_jax.data.sevenscenes",
    "import gcl_jax.data.json_index, gcl_jax.data.pairs, gcl_jax.data.mining",
    "import gcl_jax.synthetic",
    "import gcl_jax.losses, gcl_jax.parallel",
    "import gcl_jax.models, gcl_jax.models.weights, gcl_jax.models.cpu_conv",
    "from gcl_jax.train import state; state.make_optimizer",
    "import gcl_jax.train.step",
    "import configs.msls",
    "import train_step, peaks, torch_process",
    "import gcl_jax.evaluation.mesh_knn",
    # The public API (describing images needs no tf.data).
    "import gcl_jax.api, gcl_jax.train.checkpoint; gcl_jax.load_model, gcl_jax.fov_overlap",
)

CHECK = """
import sys
sys.path[:0] = [{repo!r}, {benchmarks!r}]
for statement in {imports!r}:
  exec(statement)
  tf = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tensorflow_datasets"))
  assert not tf, (statement, tf[:5])
print("ok")
"""


def test_numpy_stages_step_model_optimizer_benchmark_import_no_tensorflow():
  code = CHECK.format(repo=REPO, benchmarks=os.path.join(REPO, "benchmarks"), imports=IMPORTS)
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       check=False)
  assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


@pytest.mark.slow
def test_benchmark_builds_and_compiles_the_step_without_tensorflow():
  """One tiny step through the benchmark's own builder, TensorFlow made unimportable."""
  code = f"""
import sys
sys.path[:0] = [{REPO!r}, {os.path.join(REPO, "benchmarks")!r}]
sys.modules["tensorflow"] = None  # any import of it now raises ImportError
import jax
import train_step
run, info = train_step.build_jax_step("resnet18", 1, 32, 32, "native", "bfloat16", 0)
assert info["flops"] > 0 and info["loss"] == info["loss"], info
run(1)
print("ok")
"""
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                       check=False)
  assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]
