"""The paper's recipe: ResNet50 + GeM + GCL on MSLS at 480x640 (authors' train.py defaults).

    python main.py --config=configs/msls.py --config.data.root=/path/to/msls --workdir=runs/r50

Presets: `configs/msls.py:contrastive` trains the binary contrastive baseline (CL) instead,
`configs/msls.py:triplet` the MSLS toolkit's triplet loss with hard negatives mined by the model.
SGD lr 0.1 without momentum, x0.1 every 25 caches of 10,000 queries, 52 caches, 32 pairs per step,
margin 0.5, GeM p initialised at 3. Unlike the authors' code, nothing is selected on the
validation set: the last checkpoint is the result.
"""

from configs import default


def get_config(arg: str | None = None):
  c = default.get_config()
  c.model.arch = "resnet50"
  c.model.norm = "batch"
  c.model.pool = "gem"
  c.data.image_size = (480, 640)
  c.train.batch_size = 32
  c.train.num_steps = 16276
  c.optimizer.name = "sgd"
  c.optimizer.learning_rate = 0.1
  c.optimizer.schedule = "step"
  c.optimizer.decay_steps = 7825
  if arg in ("contrastive", "triplet"):
    c.loss.name = arg
  elif arg not in (None, ""):
    raise ValueError(f"unknown preset {arg!r} for configs/msls.py; choose '', 'contrastive' or "
                     "'triplet'")
  c.lock()
  return c
