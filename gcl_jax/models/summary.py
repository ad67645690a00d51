"""Human-readable parameter overview with a trainable / frozen column."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from flax import nnx


def _name(path) -> str:
  return ".".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)


def parameter_table(params: Any, mask: Any = None) -> str:
  """Table of parameter name, shape, size and (with `mask`) "trainable"/"frozen".

  Args:
    params: a params pytree (e.g. TrainState.params) or an nnx.Module (its nnx.Param state).
    mask: optional pytree of bools with the structure of `params` (freeze.trainable_mask).

  Returns:
    One line per parameter, then totals (all, trainable, frozen).
  """
  if isinstance(params, nnx.Module):
    params = nnx.as_pure(nnx.state(params, nnx.Param))
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  flags = [True] * len(leaves)
  if mask is not None:
    mask_leaves = jax.tree_util.tree_flatten_with_path(mask)[0]
    if [_name(p) for p, _ in mask_leaves] != [_name(p) for p, _ in leaves]:
      raise ValueError("mask does not have the structure of params")
    flags = [bool(m) for _, m in mask_leaves]
  names = [_name(p) for p, _ in leaves]
  width = max([len(n) for n in names] + [10])
  rows = [f"{'name':<{width}}  {'shape':<20} {'size':>12}  status"]
  total = trainable = 0
  for name, (_, leaf), flag in zip(names, leaves, flags):
    size = int(np.prod(leaf.shape))
    total += size
    trainable += size if flag else 0
    status = "trainable" if flag else "frozen"
    rows.append(f"{name:<{width}}  {str(tuple(leaf.shape)):<20} {size:>12,}  {status}")
  rows.append(f"{'total':<{width}}  {'':<20} {total:>12,}")
  rows.append(f"{'trainable':<{width}}  {'':<20} {trainable:>12,}")
  rows.append(f"{'frozen':<{width}}  {'':<20} {total - trainable:>12,}")
  return "\n".join(rows)
