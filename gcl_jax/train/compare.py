"""--mode=compare: train every (loss, seed) on the same budget and put the results side by side.

    python main.py --mode=compare --config=configs/demo.py \
        --config.compare.losses=gcl,contrastive,triplet --config.compare.seeds=3 --workdir=runs/compare

Every variant trains on the same number of images through the backward pass
(compare.budget_images; by default the base config's num_steps x batch_size pairs of 2 images),
so a triplet run (2 + N images per tuple) takes fewer steps than a pair run. Each run lives in
`<workdir>/<loss>_seed<k>/` with its normal outputs, is evaluated compare.num_evals times along
the way (eval_curve.jsonl) and, with compare.transfer_root, once more zero-shot on an @-format
dataset. Finished runs are skipped and unfinished ones resumed when the command is run again.
The summary: compare.json, compare.md (Recall@N mean and standard deviation over seeds, images
forwarded, wall time; the per-seed paired difference of every variant against the first) and
compare.png (Recall@5 against images seen, a band over seeds).
"""

from __future__ import annotations

import math

import ml_collections
import numpy as np
from absl import logging

from gcl_jax import io, losses, parallel
from gcl_jax.evaluation import run as eval_run
from gcl_jax.train import datasets, train as train_lib

NS = (1, 5, 10)


def variant_names(config: ml_collections.ConfigDict) -> list[str]:
  """compare.losses as a list, every name checked (before any data is generated or read)."""
  names = [n.strip() for n in str(config.compare.losses).split(",") if n.strip()]
  unknown = [n for n in names if n not in losses.LOSS_NAMES]
  if unknown or not names:
    raise ValueError(f"config.compare.losses={config.compare.losses!r}: unknown loss(es) "
                     f"{unknown}; choose among {list(losses.LOSS_NAMES)}, comma-separated")
  if len(set(names)) != len(names):
    raise ValueError(f"config.compare.losses={config.compare.losses!r} names a loss twice")
  if config.compare.seeds < 1:
    raise ValueError(f"config.compare.seeds must be >= 1, got {config.compare.seeds}")
  return names


def budget_images(config: ml_collections.ConfigDict) -> int:
  """Images through the backward pass of every run (compare.budget_images, or the base config's
  num_steps x batch_size pairs)."""
  if config.compare.budget_images:
    return int(config.compare.budget_images)
  return int(config.train.num_steps) * int(config.train.batch_size) * 2


def run_config(config: ml_collections.ConfigDict, loss: str, seed_index: int,
               data_root: str) -> ml_collections.ConfigDict:
  """The config of one run: the base config with this loss and seed, and the budget's steps."""
  c = ml_collections.ConfigDict(config.to_dict())
  c.loss.name = loss
  c.seed = int(config.seed) + seed_index
  c.data.root = data_root
  per_step = c.train.batch_size * train_lib.images_per_example(c)
  c.train.num_steps = max(1, budget_images(config) // per_step)
  every = max(1, math.ceil(c.train.num_steps / max(1, config.compare.num_evals)))
  c.train.eval_every_steps = every
  c.train.checkpoint_every_steps = every
  c.eval.thumbnail_baseline = False
  if c.optimizer.warmup_steps >= c.train.num_steps:
    c.optimizer.warmup_steps = c.train.num_steps // 10
  c.lock()
  return c


def transfer_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The run's config, evaluated on the @-format dataset compare.transfer_root."""
  c = ml_collections.ConfigDict(config.to_dict())
  c.data.format = "at_format"
  c.data.root = config.compare.transfer_root
  c.data.eval_split = config.compare.transfer_split
  c.eval.protocol = "at_format"
  c.eval.pca_dim = 0
  c.lock()
  return c


def _finished(workdir: str, num_steps: int) -> bool:
  trained = eval_run.load_results(workdir).get("trained")
  return trained is not None and trained.get("step") == num_steps


def run_one(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains (or resumes, or skips when finished) one run; returns its summary row."""
  if _finished(workdir, config.train.num_steps):
    logging.info("compare: %s is finished, skipped", workdir)
  else:
    train_lib.train_and_evaluate(config, workdir)
  results = eval_run.load_results(workdir)
  trained = results["trained"]
  last = train_lib.last_metrics(workdir)
  row = {"loss": config.loss.name, "seed": config.seed, "workdir": workdir,
         "num_steps": config.train.num_steps,
         "images_backward": last.get("images_backward"),
         "images_forwarded_mining": last.get("images_forwarded_mining"),
         "train_wall_s": last.get("train_wall_s"),
         **{f"recall@{n}": trained[f"recall@{n}"] for n in NS}}
  curve = train_lib.read_eval_curve(workdir)
  if "untrained" in results:
    curve = [{"step": 0, "images_backward": 0, "images_forwarded_mining": 0,
              **{k: v for k, v in results["untrained"].items() if k.startswith("recall@")}}
             ] + curve
  row["curve"] = curve
  if config.compare.transfer_root:
    row["transfer"] = _transfer(config, workdir)
  return row


def _transfer(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Recall@N of the run's final model on compare.transfer_root (computed once, then read)."""
  c = transfer_config(config)
  path = io.join(workdir, f"eval_step{config.train.num_steps}_{c.eval.protocol}.json")
  result = io.read_json(path) if io.exists(path) else train_lib.evaluate_checkpoint(c, workdir)
  return {f"recall@{n}": result[f"recall@{n}"] for n in NS} | {
      "num_queries": result["num_queries"], "num_database": result["num_database"]}


def _mean_std(values) -> dict:
  v = np.asarray(values, np.float64)
  return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
          "n": len(v)}


def summarize(rows: list[dict], names: list[str]) -> dict:
  """Per variant: mean / std over seeds, and the per-seed paired difference against names[0]."""
  by = {name: sorted((r for r in rows if r["loss"] == name), key=lambda r: r["seed"])
        for name in names}
  out = {}
  for name in names:
    runs = by[name]
    v = {"runs": runs, "num_steps": runs[0]["num_steps"]}
    for key in [f"recall@{n}" for n in NS] + ["images_backward", "images_forwarded_mining",
                                               "train_wall_s"]:
      v[key] = _mean_std([r[key] for r in runs])
    if "transfer" in runs[0]:
      v["transfer"] = {f"recall@{n}": _mean_std([r["transfer"][f"recall@{n}"] for r in runs])
                       for n in NS}
    if name != names[0]:
      base = {r["seed"]: r for r in by[names[0]]}
      paired = [(r, base[r["seed"]]) for r in runs if r["seed"] in base]
      v["paired_diff"] = {
          f"recall@{n}": {**_mean_std([a[f"recall@{n}"] - b[f"recall@{n}"] for a, b in paired]),
                          "per_seed": [a[f"recall@{n}"] - b[f"recall@{n}"] for a, b in paired]}
          for n in NS}
    out[name] = v
  return out


def compare(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """--mode=compare: runs every (loss, seed) of config.compare and writes the summary."""
  names = variant_names(config)
  if config.compare.transfer_root and not io.isdir(config.compare.transfer_root):
    raise FileNotFoundError(f"config.compare.transfer_root={config.compare.transfer_root!r} is not "
                            "a directory")
  io.makedirs(workdir)
  data_root = datasets.dataset_root(config, workdir)  # one world (and label cache) for all runs
  rows = []
  for seed_index in range(config.compare.seeds):
    for name in names:
      c = run_config(config, name, seed_index, data_root)
      logging.info("compare: %s, seed %d, %d steps", name, c.seed, c.train.num_steps)
      rows.append(run_one(c, io.join(workdir, f"{name}_seed{c.seed}")))
  summary = {"budget_images": budget_images(config), "seeds": config.compare.seeds,
             "variants": summarize(rows, names),
             "command_config": config.to_dict()}
  if parallel.is_chief():
    from gcl_jax.evaluation import visualize  # pylint: disable=g-import-not-at-top
    io.write_json(io.join(workdir, "compare.json"), summary)
    io.atomic_write(io.join(workdir, "compare.md"), compare_markdown(summary))
    visualize.plot_compare_curves(summary, io.join(workdir, "compare.png"))
  logging.info("compare:\n%s", compare_markdown(summary))
  return summary


def _cell(stat: dict, digits: int = 1) -> str:
  return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def compare_markdown(summary: dict) -> str:
  """compare.md: the results table and the paired differences against the first variant."""
  variants = summary["variants"]
  names = list(variants)
  has_transfer = "transfer" in variants[names[0]]
  head = ["variant", "seeds", "steps"] + [f"R@{n}" for n in NS]
  if has_transfer:
    head += [f"transfer R@{n}" for n in NS]
  head += ["images backward", "images forwarded for mining", "train wall s"]
  lines = [f"Budget: {summary['budget_images']:,} images through the backward pass per run; "
           "mean ± standard deviation over the seeds of each variant.", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for name, v in variants.items():
    row = [name, str(v["recall@1"]["n"]), str(v["num_steps"])] + [_cell(v[f"recall@{n}"])
                                                                  for n in NS]
    if has_transfer:
      row += [_cell(v["transfer"][f"recall@{n}"]) for n in NS]
    row += [f"{v['images_backward']['mean']:,.0f}", f"{v['images_forwarded_mining']['mean']:,.0f}",
            f"{v['train_wall_s']['mean']:.0f}"]
    lines.append("| " + " | ".join(row) + " |")
  if len(names) > 1:
    lines += ["", f"Paired difference against {names[0]} (same seed), mean ± standard deviation "
              "over seeds, and per seed:", "",
              "| variant | " + " | ".join(f"ΔR@{n}" for n in NS) + " |",
              "|---|" + "---|" * len(NS)]
    for name in names[1:]:
      d = variants[name]["paired_diff"]
      lines.append(f"| {name} − {names[0]} | " + " | ".join(
          f"{_cell(d[f'recall@{n}'])} ({', '.join(f'{x:+.1f}' for x in d[f'recall@{n}']['per_seed'])})"
          for n in NS) + " |")
  return "\n".join(lines) + "\n"
