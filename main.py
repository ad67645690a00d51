"""gcl-jax command line; the flags and the dispatch live in gcl_jax/main.py.

  python main.py --config=configs/demo.py --workdir=runs/demo            # train + evaluate
  python main.py --config=configs/msls.py --config.data.root=/data/msls --workdir=runs/r50
  python main.py --mode=label --config=configs/msls.py --config.data.root=/data/msls

`python -m gcl_jax ...` and the installed `gcl-jax ...` are the same command.
"""

from gcl_jax.main import run

if __name__ == "__main__":
  run()
