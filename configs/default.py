"""Every configuration key of gcl-jax, with its default and meaning.

Other config files start from `get_config()` here and override what they need. Select a preset
with `--config=configs/x.py:preset` and override single keys from the command line, e.g.
`--config.loss.name=contrastive --config.loss.margin=0.7`. Configs are locked: a misspelt key
fails with an error that names it.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  c = ml_collections.ConfigDict()
  c.seed = 0  # Seeds parameter init and the pair sampler; a run is a function of (config, seed).

  # ---- data -----------------------------------------------------------------------------
  c.data = ml_collections.ConfigDict()
  # Where the images come from: "msls" (data.root in the MSLS layout, train_val/<city>/...),
  # "tfds" (a dataset prepared once with `python -m gcl_jax.data.tfds_builders gcl_msls`, local or
  # gs://), "at_format" (images/<split>/{database,queries}/@east@north@...@.jpg; evaluation),
  # "sevenscenes" (data.root = ONE 7-Scenes scene folder: TrainSplit.txt, TestSplit.txt, seq-NN/;
  # the scene is the one "city"; trains on split "train", evaluates data.eval_split="test") or
  # "json_index" (the authors' JSON index files with 6-DoF `poses`: data.train_index,
  # data.eval_index, image paths relative to data.root). The two 6-DoF formats need
  # labels.kind="pose3d" to train and ignore data.train_cities / data.val_cities; their evaluation
  # searches the evaluation frames (queries) in the training frames (database), positives within
  # eval.radius_m of the camera centre on data.ground_axes: set eval.radius_m to the scene's scale
  # (e.g. 0.5 m) and eval.protocol="at_format" (every query counts, the historical 7-Scenes rule)
  # or "msls_per_city" (queries without a positive within the radius are left out).
  c.data.format = "msls"
  c.data.train_index = ""  # data.format="json_index": the training frames' index file ...
  c.data.eval_index = ""  # ... and the evaluation queries' (the database is the training frames).
  # 6-DoF formats: world axes (a, b) of the poses used as (east, north) for ImageTable.utm and
  # heading (gcl_jax/data/sevenscenes.py; (0, 2) is the ground plane of a level first camera).
  c.data.ground_axes = (0, 1)
  c.data.tfds_name = "gcl_msls"  # data.format="tfds": the prepared dataset ...
  c.data.tfds_data_dir = ""  # ... its TFDS data_dir (empty: TFDS's default) ...
  # ... and a local folder where its JPEG bytes are materialised once for random access
  # (memory-mapped; empty: in RAM, about the size of the JPEG files of the cities used).
  c.data.tfds_cache_dir = ""
  c.data.root = ""  # Dataset root (local path or gs://). Empty: use the synthetic world below.
  # Synthetic world (MSLS layout) generated under <workdir>/data when data.root is empty.
  # Keys are fields of gcl_jax.synthetic.WorldConfig; empty dict = its defaults.
  c.data.synthetic = ml_collections.ConfigDict()
  c.data.train_cities = ("trondheim", "london", "boston", "melbourne", "amsterdam", "helsinki",
                         "tokyo", "toronto", "saopaulo", "moscow", "zurich", "paris", "bangkok",
                         "budapest", "austin", "berlin", "ottawa", "phoenix", "goa", "amman",
                         "nairobi", "manila")  # The 22 MSLS training cities.
  c.data.val_cities = ("cph", "sf")  # Cities evaluated (MSLS format).
  # Split evaluated: MSLS "train_val" (val cities live there) or "test"; @-format "val"/"test";
  # 7-Scenes "test".
  c.data.eval_split = "train_val"
  c.data.image_size = (480, 640)  # (H, W) after resizing; aspect ratio is not kept (authors).
  c.data.mean = (0.485, 0.456, 0.406)  # ImageNet normalization, RGB in [0, 1].
  c.data.std = (0.229, 0.224, 0.225)
  # True: the input pipeline ships uint8 batches and the accelerator normalizes them (4x fewer
  # bytes, no float work on the host CPUs); False: float32 batches normalized on the host. Both
  # give the same floats bit for bit (gcl_jax/data/normalize.py).
  c.data.normalize_on_device = True
  # Resizing: "pil" (PIL bilinear inside tf.data, bit-exact with the authors) or "tf" (pure TF
  # ops, within 1 grey level; see gcl_jax/data/pipeline.py).
  c.data.resize_method = "pil"
  # DCT-scaled JPEG decoding of sources at least twice the image size ("pil" only; faster on
  # large photos, not bit-exact). Applies to training and evaluation.
  c.data.fast_decode = False
  c.data.augment_colour = False  # Colour jitter of training images (the authors do not augment).
  # An unreadable training image: "error" stops training naming the file; "skip" drops the pair,
  # logs the file and counts it (`skipped_pairs` in metrics.jsonl). Evaluation always stops.
  c.data.bad_images = "error"
  # Training batches (pairs) built ahead of the step as global device arrays by a background
  # thread, while the step runs (2 is usual; 0: built by the training loop when needed). Triplet
  # batches are never built past a mining sub-cache (it is mined with the current model).
  c.data.prefetch_to_device = 2

  # ---- graded labels ------------------------------------------------------------------------
  c.labels = ml_collections.ConfigDict()
  # "fov": 2-D field-of-view overlap from UTM + compass heading (data.format msls / tfds);
  # "pose3d": 3-D overlap of 6-DoF camera poses (data.format sevenscenes / json_index;
  # gcl_jax/labels/pose3d.py): queries = database = the training frames, never paired with
  # themselves; cached as <labels.dir>/<scene>_pose3d.npz.
  c.labels.kind = "fov"
  c.labels.dir = ""  # Where label tables are cached; empty: <data.root>/labels.
  c.labels.radius_m = 50.0  # Radius r of each camera's field-of-view sector (metres).
  c.labels.fov_deg = 90.0  # Opening angle theta of the sector (degrees).
  c.labels.normalization = "ratio"  # "ratio": |A and B| / |A|; "iou": |A and B| / |A or B|.
  c.labels.cutoff_factor = 2.0  # psi = 0 beyond cutoff_factor * radius_m (2 = exact bound).
  c.labels.pos_dist_m = 10.0  # Binary `sim` label: positive within this distance ...
  c.labels.neg_dist_m = 25.0  # ... negative beyond this one, ambiguous in between (MSLS).
  # labels.kind="pose3d": camera intrinsics, a preset ("7scenes": the depth camera, fx = fy = 585,
  # 640x480; "7scenes_color": fx = fy = 525) or "fx,fy,cx,cy,width,height" in pixels.
  c.labels.pose3d_intrinsics = "7scenes"
  c.labels.pose3d_positive_above = 0.5  # Binary `sim` label: positive where psi > this.
  # True: back-project each frame's depth map (frame-XXXXXX.depth.png beside the colour image)
  # when every training frame has one (some but not all: an error); otherwise, and when False, the
  # frustum-volume overlap from poses alone. Depth maps are held in memory while labelling.
  c.labels.pose3d_use_depth = False
  # Depth measure: a point counts only where the other frame's depth agrees within this many
  # metres (occlusion check); None: no check.
  c.labels.pose3d_depth_tolerance_m = ml_collections.config_dict.placeholder(float)
  c.labels.pose3d_max_range_m = 5.0  # Frustum measure: depth range sampled (metres).
  c.labels.pose3d_stride = 4  # Pixel sampling step (frustum measure: 4x this).
  c.labels.pose3d_symmetric = "mean"  # psi of (a, b) and (b, a): "mean", "min", "max" or "none".

  # ---- pair sampler (one pair per query per epoch) --------------------------------------------
  c.sampler = ml_collections.ConfigDict()
  # Probabilities of drawing a positive (psi >= pos_threshold), soft negative (0 < psi < pos),
  # hard negative (psi == 0) database image for a query (authors: 0.5 / 0.25 / 0.25).
  c.sampler.strata_probs = (0.5, 0.25, 0.25)
  c.sampler.pos_threshold = 0.5
  # What to do when the drawn stratum is empty: "drop" the query for this epoch (authors) or
  # "redraw" among the non-empty strata.
  c.sampler.empty_stratum = "drop"
  c.sampler.chunk_size = 10000  # Queries per chunk of the random permutation (authors' cache).

  # ---- model ---------------------------------------------------------------------------------
  c.model = ml_collections.ConfigDict()
  c.model.arch = "resnet50"  # resnet18/34/50/101/152, resnext101_32x8d, vgg16.
  c.model.width = 64  # Channels of the stem; 64 is torchvision's. Smaller for CPU demos.
  c.model.norm = "batch"  # "batch" (torchvision) or "group" (GroupNorm; small-batch training).
  c.model.norm_groups = 32  # Groups of GroupNorm.
  c.model.pool = "gem"  # "gem" (learnable p), "avg", "max", "netvlad".
  c.model.gem_p = 3.0  # Initial GeM exponent.
  c.model.netvlad_clusters = 64  # NetVLAD clusters K (descriptor K x C before whitening); they
  # are initialised by k-means of local features of 500 training images.
  c.model.whitening_dim = 0  # > 0: a learned linear layer D -> d before the final L2.
  c.model.vgg_end = "pool5"  # "pool5" (authors: 31 children) or "conv5_3" (NetVLAD encoder).
  # Authors' --last_layer: train only the last N children of the backbone (ResNet: 1 = layer4;
  # VGG-16 counts 8 children per block, keeping their off-by-one); None trains everything.
  c.model.last_layer = ml_collections.config_dict.placeholder(int)
  # BatchNorm during training: "train" (authors: batch statistics, running statistics updated,
  # frozen layers included), "frozen" (running statistics everywhere; recommended for
  # fine-tuning pretrained weights), "frozen_layers" (running statistics in frozen children).
  c.model.bn_mode = "train"
  # Weights to start from: a PyTorch .pth (torchvision ImageNet or the authors' GCL checkpoints;
  # needs torch), .safetensors or .npz state dict, or a directory written by
  # `python -m gcl_jax.models.weights`. Empty: random initialisation.
  c.model.init_checkpoint = ""
  c.model.dtype = "float32"  # Compute dtype: "float32" or "bfloat16" (params stay float32).
  # On CPU only, compute convolution weight gradients as im2col + one matmul where that is
  # faster than XLA:CPU (gcl_jax/models/cpu_conv.py, ~2x on ResNet-50); GPUs and TPUs always use
  # XLA's convolutions. Same parameters and checkpoints either way.
  c.model.cpu_conv = True

  # ---- loss ----------------------------------------------------------------------------------
  c.loss = ml_collections.ConfigDict()
  # "gcl" (graded psi), "contrastive" (binary `sim` labels, the authors' CL baseline) or "triplet"
  # (the MSLS toolkit's baseline: query, nearest positive and hard negatives mined with the
  # current model; see loss.mining).
  c.loss.name = "gcl"
  c.loss.margin = 0.5  # tau of gcl / contrastive.
  # Hard-negative mining of the triplet loss (gcl_jax/data/mining.py; MSLS toolkit defaults).
  # Training walks the queries of each epoch in sub-caches of cache_queries; for each sub-cache
  # the current model embeds its queries, their positives and num_negative_samples random
  # database images, and keeps per query the nearest positive and the num_negatives hardest
  # negatives. The tuples are trained on once; then the next sub-cache is mined.
  c.loss.mining = ml_collections.ConfigDict()
  c.loss.mining.num_negatives = 5
  c.loss.mining.cache_queries = 1000
  c.loss.mining.num_negative_samples = 1000
  # The toolkit's --margin m: its triplet loss and its mining rule use sqrt(m) (0.316 for 0.1) as
  # the margin between distances.
  c.loss.mining.margin = 0.1
  c.loss.mining.pos_dist_m = 10.0  # Positives: database images within this distance ...
  c.loss.mining.neg_dist_m = 25.0  # ... negatives: farther than this (or in another city).
  # Which queries of a sub-cache are kept: "toolkit" (its rule, as written) or "violating" (the
  # hardest negative violates the margin: the tuple has a non-zero loss).
  c.loss.mining.keep_rule = "toolkit"

  # ---- optimiser -------------------------------------------------------------------------------
  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "sgd"  # "sgd", "adam" or "adamw".
  c.optimizer.learning_rate = 0.1
  c.optimizer.momentum = 0.0  # SGD momentum (authors: none).
  c.optimizer.weight_decay = 0.0  # adamw only.
  c.optimizer.schedule = "step"  # "constant", "step" (x decay_factor every decay_steps), "cosine".
  c.optimizer.decay_steps = 7825  # Authors: every 25 caches of 10,000 queries (313 steps each).
  c.optimizer.decay_factor = 0.1
  c.optimizer.warmup_steps = 0  # Linear warm-up (cosine schedule only).

  # ---- training ------------------------------------------------------------------------------
  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 32  # Pairs per optimizer step, over all devices and hosts.
  c.train.num_steps = 16276  # Authors: 52 caches x 10,000 queries / 32 pairs.
  # Split each batch into this many micro-batches whose gradients are averaged before one update
  # (same update as the full batch, except BatchNorm sees micro-batch statistics; saves memory).
  c.train.grad_accum_steps = 1
  c.train.log_every_steps = 50  # Writes <workdir>/metrics.jsonl and a progress line.
  c.train.checkpoint_every_steps = 1000  # Orbax checkpoint in <workdir>/checkpoints.
  c.train.max_checkpoints_to_keep = 3
  # > 0: also evaluate every this many steps (and at the end), appending Recall@N with the images
  # seen so far to <workdir>/eval_curve.jsonl (the data-efficiency curve of --mode=compare).
  c.train.eval_every_steps = 0

  # ---- evaluation -------------------------------------------------------------------------------
  c.eval = ml_collections.ConfigDict()
  # msls_per_city: each city's queries searched in that city's database (authors);
  # msls_official: MSLS rules, one search over all cities' databases (peers);
  # msls_test: MSLS rules on the test cities (needs their published ground truth);
  # at_format: @-format datasets, every query in the denominator;
  # gt_h5: positives from the `sim` matrix of an authors' *_gt.h5 file (eval.gt_h5).
  c.eval.protocol = "msls_per_city"
  c.eval.radius_m = 25.0  # A database image within this distance of a query is a positive.
  c.eval.ns = (1, 5, 10, 20)  # Recall@N reported.
  c.eval.batch_size = 32  # Images per extraction step (padded; any value gives the same result).
  c.eval.before_training = True  # Also evaluate the untrained (initial) model.
  c.eval.after_training = True  # Evaluate the final model (results.json, pictures).
  c.eval.thumbnail_baseline = True  # Also evaluate raw colour thumbnails (trivial baseline).
  c.eval.thumbnail_size = (8, 12)
  c.eval.num_vis_queries = 8  # Queries drawn in retrievals.png.
  c.eval.gt_h5 = ""  # Ground-truth file of the gt_h5 protocol.
  c.eval.pca_dim = 0  # PCA-whitening to this many dimensions before search; 0 = off.
  # Fit set of the whitening: "train" (descriptors of up to pca_num_fit training-database images)
  # or "eval_database" (the evaluation database itself: the authors' transductive choice).
  c.eval.pca_fit = "train"
  c.eval.pca_num_fit = 10000
  c.eval.cache_descriptors = True  # Reuse descriptors in <workdir>/descriptors (keyed by step,
  # model config, image size and image list).

  # ---- --mode=compare (gcl_jax/train/compare.py) ----------------------------------------------
  c.compare = ml_collections.ConfigDict()
  c.compare.losses = "gcl,contrastive,triplet"  # Loss variants (config.loss.name), comma-separated.
  c.compare.seeds = 3  # Runs per variant, with seeds config.seed, config.seed + 1, ...
  # Images through the backward pass of every run; 0: the base config's train.num_steps x
  # train.batch_size pairs x 2 images. Each variant gets the steps that spend it.
  c.compare.budget_images = 0
  c.compare.num_evals = 4  # Evaluations along each run (the data-efficiency curve).
  # An @-format dataset (e.g. VPR-Bench's Corridor) on which every final model is evaluated
  # zero-shot (protocol at_format, split compare.transfer_split); empty: none.
  c.compare.transfer_root = ""
  c.compare.transfer_split = "test"

  # ---- --mode=export: a place index of the evaluation databases (gcl_jax/localize) -----------
  c.export = ml_collections.ConfigDict()
  # The index directory written (local path or gs://; required): FAISS index, image keys, paths,
  # UTM positions and headings, the network's weights, PCA-whitening (eval.pca_dim > 0, fitted
  # as evaluation fits it) and the fingerprint of the model and the preprocessing.
  c.export.dir = ""
  # "flat" (exact search, as evaluation), "ivf" (IndexIVFFlat), "hnsw" (IndexHNSWFlat) or "ivfpq"
  # (IndexIVFPQ: compressed codes). benchmarks/index.py measures their recall against "flat".
  c.export.index_type = "flat"
  c.export.ivf_nlist = 0  # ivf / ivfpq: inverted lists; 0: round(4 sqrt(N)), at most N.
  c.export.ivf_nprobe = 16  # ivf / ivfpq: lists searched per query (nlist: exact for ivf).
  # ivf / ivfpq: database images the k-means (and PQ codebooks) train on, a seeded sample;
  # 0: 256 per list (FAISS's cap). At 1M x 2048-d, 128,000 (32 per list) built in 6 min on 2 cores.
  c.export.ivf_train_size = 0
  c.export.hnsw_m = 32  # hnsw: links per node (M).
  c.export.hnsw_ef_construction = 80  # hnsw: candidates kept while building.
  c.export.hnsw_ef_search = 128  # hnsw: candidates kept while searching (efSearch).
  c.export.pq_m = 0  # ivfpq: sub-quantizers (bytes per code at 8 bits); 0: the largest divisor
  # of the dimension not above dimension / 16. Must divide the (whitened) descriptor dimension.
  c.export.pq_nbits = 8  # ivfpq: bits per sub-quantizer code (needs >= 2**pq_nbits images).
  # Images per descriptor chunk (<dir>/descriptors/<start>-<end>.npy, written as each is done);
  # a rerun of an interrupted export describes only the missing chunks.
  c.export.shard_size = 1024

  # ---- --mode=localize: localize new photos in an exported index (gcl_jax/localize) ----------
  c.localize = ml_collections.ConfigDict()
  c.localize.index = ""  # The index directory written by --mode=export (required).
  # The photos: a directory (searched recursively for image files), a glob pattern such as
  # "photos/*.jpg" or one file. Any size or aspect: they are preprocessed as the index's images
  # were (the preprocessing recorded in the index, not config.data). Unreadable ones are skipped
  # and listed in <workdir>/unreadable.txt.
  c.localize.images = ""
  c.localize.k = 10  # Matches per photo (CSV rows; the weighted position estimate uses all k).
  c.localize.batch_size = 32  # Photos per extraction step (padded; any value gives the same).
  c.localize.pictures = True  # Also draw <workdir>/per_photo/<name>.png (photo, top-5, map).
  return c
