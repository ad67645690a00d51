"""Test setup: 8 fake CPU devices for sharding tests; paths to test data."""

import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

jax.config.update("jax_num_cpu_devices", 8)

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO / "tests" / "data"
SHARED = REPO.parent / "shared"


@pytest.fixture
def data_dir() -> pathlib.Path:
  return DATA


@pytest.fixture
def shared_dir() -> pathlib.Path:
  """Only for the real image sets under ../shared/data, too large to copy into tests/data."""
  if not SHARED.is_dir():
    pytest.skip(f"{SHARED} (the project's shared reference data) is not present")
  return SHARED
