"""Named hyper-parameter sweeps: each expands to a list of config overrides (one per run).

A sweep is a grid: an ordered mapping from dotted config keys to the values to try; the runs
are the Cartesian product in key order (the last key varies fastest). Expand and launch with

    python launch/sweep.py --config=configs/msls.py --sweep=loss_margin --workdir_root=runs/sweep

Keys must exist in the config the sweep is applied to; launch/sweep.py checks that before
printing or starting anything.
"""

from __future__ import annotations

import itertools
from typing import Any

SWEEPS: dict[str, dict[str, tuple[Any, ...]]] = {
    # GCL vs the binary contrastive baseline over the margin tau (paper, Table 1 / ablation).
    "loss_margin": {
        "loss.name": ("gcl", "contrastive"),
        "loss.margin": (0.3, 0.5, 0.7),
    },
    # Backbones x global pooling.
    "backbones": {
        "model.arch": ("resnet18", "resnet50", "resnet152", "resnext101_32x8d", "vgg16"),
        "model.pool": ("gem", "avg", "max"),
    },
    # Repeats of the paper's recipe with different seeds (run-to-run variance).
    "seeds": {
        "seed": (0, 1, 2),
    },
}


def get_sweep(name: str) -> list[dict[str, Any]]:
  """The runs of sweep `name`: one {dotted key: value} override dict per run, in a fixed order.

  Raises:
    ValueError: `name` is not a sweep of SWEEPS.
  """
  if name not in SWEEPS:
    raise ValueError(f"unknown sweep {name!r}; choose one of {sorted(SWEEPS)}")
  grid = SWEEPS[name]
  keys = list(grid)
  return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]
