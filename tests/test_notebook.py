"""notebooks/quickstart.ipynb runs end to end at its tiny size (GCL_NOTEBOOK_TINY=1) in a fresh
kernel of this interpreter, in a temporary directory, and prints real values."""

import json
import os
import pathlib
import re
import sys

import nbformat
import pytest
from nbclient import NotebookClient

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "quickstart.ipynb"
KERNEL = "gcl-jax-tests"


def read_notebook() -> nbformat.NotebookNode:
  return nbformat.read(NOTEBOOK, as_version=4)


def test_committed_without_outputs_and_with_one_parameter_cell():
  nb = read_notebook()
  nbformat.validate(nb)
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert all(not c.outputs and c.execution_count is None for c in code)
  tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
  assert len(tagged) == 1
  assert 'TINY = os.environ.get("GCL_NOTEBOOK_TINY") == "1"' in tagged[0].source


def register_kernel(jupyter_dir: pathlib.Path) -> None:
  """A kernelspec that starts THIS interpreter (a `python3` spec elsewhere may name another)."""
  spec_dir = jupyter_dir / "kernels" / KERNEL
  spec_dir.mkdir(parents=True)
  spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
          "display_name": "gcl-jax tests", "language": "python"}
  (spec_dir / "kernel.json").write_text(json.dumps(spec))


def outputs_of(nb: nbformat.NotebookNode) -> tuple[str, int]:
  """(all printed text, number of PNG pictures displayed)."""
  text, pictures = [], 0
  for cell in nb.cells:
    for out in cell.get("outputs", []):
      if out.output_type == "stream" and out.name == "stdout":
        text.append(out.text)
      elif out.output_type in ("display_data", "execute_result"):
        pictures += "image/png" in out.data
        text.append(out.data.get("text/plain", ""))
  return "".join(text), pictures


@pytest.mark.slow
def test_quickstart_runs_at_tiny_size(tmp_path, monkeypatch):
  register_kernel(tmp_path / "jupyter")
  monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
  monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
  monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
  monkeypatch.setenv("GCL_NOTEBOOK_TINY", "1")
  monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
  # The kernel imports gcl_jax and configs from this checkout, installed or not.
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
      p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p))
  work = tmp_path / "work"
  work.mkdir()
  nb = read_notebook()
  NotebookClient(nb, kernel_name=KERNEL, timeout=900,
                 resources={"metadata": {"path": str(work)}}).execute()

  text, pictures = outputs_of(nb)
  assert pictures == 5, text[-3000:]  # labels map, label strip, retrievals, curves, new images
  recall = float(re.search(r"Recall@1 after training: ([0-9.]+) %", text).group(1))
  results = json.loads((work / "runs" / "quickstart" / "results.json").read_text())
  assert set(results) == {"thumbnail", "untrained", "trained"}
  assert 0.0 <= recall <= 100.0
  assert recall == pytest.approx(results["trained"]["recall@1"], abs=0.05)
  assert results["trained"]["step"] == 2
  m = re.search(r"descriptors shape: \((\d+), (\d+)\)", text)
  assert (int(m.group(1)), int(m.group(2))) == (4, 64)  # 4 images; ResNet-18 of width 8: 64-d
  norms = re.search(r"norms: \[([^\]]*)\]", text).group(1).split()
  assert [float(x) for x in norms] == [1.0] * 4
  assert re.search(r"query \d+ has [1-9]\d*, \d+ with psi >= 0.5", text), text[-3000:]
