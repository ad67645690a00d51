"""gcl-jax command line (the same as `python main.py` and the `gcl-jax` console script).

  python -m gcl_jax --config=configs/demo.py --workdir=runs/demo            # train + evaluate
  python -m gcl_jax --config=configs/msls.py --config.data.root=/data/msls --workdir=runs/r50
  python -m gcl_jax --mode=label --config=configs/msls.py --config.data.root=/data/msls

The flags and the dispatch live in gcl_jax/main.py.
"""

from gcl_jax.main import run

if __name__ == "__main__":
  run()
