"""Generates the synthetic world and prints its sizes: python -m gcl_jax.synthetic ROOT."""

import argparse
import json
import os
import time

from gcl_jax.synthetic import WorldConfig, generate_world


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description="Generate the synthetic MSLS world (once) and "
                                   "print its image counts.")
  parser.add_argument("root", help="output directory")
  parser.add_argument("--config", default="{}", help="JSON dict of WorldConfig overrides")
  args = parser.parse_args(argv)
  config = WorldConfig(**json.loads(args.config))
  t0 = time.perf_counter()
  generate_world(args.root, config)
  with open(os.path.join(args.root, "world.json")) as fh:
    sizes = json.load(fh)["cities"]
  print(json.dumps({"seconds": round(time.perf_counter() - t0, 1), "cities": sizes}))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
