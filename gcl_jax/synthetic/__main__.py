"""Generates the synthetic MSLS world (once) and prints its image counts.

    python -m gcl_jax.synthetic ROOT [--config='{"image_height": 64, "image_width": 96}']
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from absl import flags

from gcl_jax import cli, io
from gcl_jax.synthetic import WorldConfig, generate_world

_CLI = cli.Command("python -m gcl_jax.synthetic", __doc__)


def _define_flags() -> flags.FlagValues:
  fv = flags.FlagValues()
  flags.DEFINE_string("config", "{}", "JSON dict of WorldConfig overrides", flag_values=fv)
  return fv


def main(argv: Sequence[str] | None = None) -> int:
  """Command-line entry point; returns the exit status."""
  fv = _define_flags()
  rest = _CLI.parse(fv, argv, positional=True)
  if isinstance(rest, int):
    return rest
  if len(rest) != 1:
    return _CLI.error(f"expected one output directory, got {rest}", 2)
  try:
    config = WorldConfig(**json.loads(fv.config))
  except (TypeError, ValueError) as e:
    return _CLI.error(f"--config={fv.config}: {e}", 2)
  t0 = time.perf_counter()
  root = generate_world(rest[0], config)
  sizes = io.read_json(io.join(root, "world.json"))["cities"]
  print(json.dumps({"seconds": round(time.perf_counter() - t0, 1), "cities": sizes}))
  return 0


if __name__ == "__main__":
  cli.run(main)
