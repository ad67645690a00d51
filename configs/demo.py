"""Tiny CPU preset: a generated synthetic city in the MSLS layout, a narrow ResNet-18.

    python main.py --config=configs/demo.py --workdir=runs/demo

Runs end to end (world generation, labels, evaluation before training, ~5 minutes of training,
evaluation after) in under 10 minutes on 2 CPU cores, with no network and no pretrained weights.
"""

from configs import default


def get_config(arg: str | None = None):
  del arg
  c = default.get_config()
  c.data.root = ""  # Generated under <workdir>/data/synthetic_msls.
  # Fields of gcl_jax.synthetic.WorldConfig (the world's cities are data.*_cities).
  c.data.synthetic.image_height = 64
  c.data.synthetic.image_width = 96
  c.data.synthetic.seed = 0
  c.data.train_cities = ("synth_north", "synth_east", "synth_south")
  c.data.val_cities = ("synth_val",)
  c.data.image_size = (64, 96)
  c.model.arch = "resnet18"
  c.model.width = 16
  c.model.norm = "group"  # GroupNorm trains reliably with few pairs per step.
  c.model.norm_groups = 8
  c.optimizer.name = "adam"
  c.optimizer.learning_rate = 1e-3
  c.optimizer.schedule = "cosine"
  c.optimizer.warmup_steps = 100
  c.train.batch_size = 16
  c.train.num_steps = 1800
  c.train.log_every_steps = 50
  c.train.checkpoint_every_steps = 300
  c.eval.batch_size = 64
  c.lock()
  return c
