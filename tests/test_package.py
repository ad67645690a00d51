"""pyproject.toml builds a wheel with gcl_jax/, configs/ and the `gcl-jax` console script, and
`python -m gcl_jax` is the command line of main.py."""

import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

import gcl_jax

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
  """The wheel built offline from a copy of the sources (setuptools writes build/ and *.egg-info
  next to pyproject.toml; the copy keeps them out of the repository)."""
  src = tmp_path_factory.mktemp("src")
  shutil.copy(REPO / "pyproject.toml", src)
  shutil.copy(REPO / "README.md", src)
  ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
  for package in ("gcl_jax", "configs"):
    shutil.copytree(REPO / package, src / package, ignore=ignore)
  out = tmp_path_factory.mktemp("wheel")
  proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps",
                         "--no-build-isolation", "--no-index", "-q", "-w", str(out)],
                        capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  (path,) = out.glob("gcl_jax-*.whl")
  return zipfile.ZipFile(path)


def test_wheel_holds_the_packages_and_the_entry_point(wheel):
  names = set(wheel.namelist())
  sources = {str(p.relative_to(REPO)) for package in ("gcl_jax", "configs")
             for p in (REPO / package).rglob("*.py") if "__pycache__" not in p.parts}
  assert sources <= names, sorted(sources - names)[:5]
  assert {"gcl_jax/__main__.py", "gcl_jax/api.py", "configs/default.py"} <= names
  assert not any(n.startswith(("tests/", "benchmarks/", "notebooks/")) for n in names)
  dist = f"gcl_jax-{gcl_jax.__version__}.dist-info"
  entry_points = wheel.read(f"{dist}/entry_points.txt").decode()
  assert "[console_scripts]\ngcl-jax = gcl_jax.main:run" in entry_points
  metadata = wheel.read(f"{dist}/METADATA").decode()
  assert "Requires-Python: >=3.12" in metadata
  assert "Requires-Dist: jax>=0.12" in metadata
  assert 'Requires-Dist: jax[cuda12]>=0.12; extra == "cuda"' in metadata
  assert 'Requires-Dist: jax[tpu]>=0.12; extra == "tpu"' in metadata


def test_requirements_pin_every_runtime_dependency(wheel):
  """Each runtime dependency of the package is pinned in requirements.txt (what CI installs)."""
  metadata = wheel.read(f"gcl_jax-{gcl_jax.__version__}.dist-info/METADATA").decode()
  deps = [line.split(":", 1)[1].strip() for line in metadata.splitlines()
          if line.startswith("Requires-Dist:") and "extra ==" not in line]
  names = {d.split(">")[0].split("[")[0].strip().lower() for d in deps}
  pinned = {line.split("==")[0].strip().lower()
            for line in (REPO / "requirements.txt").read_text().splitlines()
            if "==" in line and not line.lstrip().startswith("#")}
  assert names - {"etils"} <= pinned, sorted(names - pinned)


def test_three_command_lines_are_one():
  """`python -m gcl_jax`, `python main.py` and the console script all run gcl_jax.main.run: the
  same flags, the same help text (absl exits with status 1 after printing help)."""
  outs = []
  for args in (["-m", "gcl_jax"], ["main.py"]):
    proc = subprocess.run([sys.executable, *args, "--helpfull"], capture_output=True, text=True,
                          cwd=REPO, timeout=300, check=False)
    assert proc.returncode in (0, 1) and not proc.stderr.strip(), proc.stderr[-2000:]
    for flag in ("--config", "--workdir", "--mode"):
      assert flag in proc.stdout
    # Everything after the usage text (which is the running module's docstring) is the flags.
    outs.append(proc.stdout[proc.stdout.index("flags:"):])
  assert outs[0] == outs[1]
  # In a fresh interpreter: gcl_jax.main defines its flags on absl's global FLAGS.
  code = ("import main, gcl_jax.main, gcl_jax.__main__ as m; "
          "print(main.run is gcl_jax.main.run is m.run)")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                        timeout=300, check=False)
  assert proc.stdout.strip() == "True", proc.stderr[-2000:]
