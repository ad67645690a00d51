#!/usr/bin/env bash
# Train gcl-jax on a Cloud TPU VM (single host or pod slice): create the VM or reuse it, copy
# this checkout (or clone REPO_URL) to every worker, install a Python 3.12 venv with
# requirements.txt + jax[tpu], and run main.py on ALL workers at once (--worker=all). Each
# worker runs one process; main.py --distributed=on calls jax.distributed.initialize(), which
# finds the other workers of the slice by itself on Cloud TPU.
#
#   launch/tpu_vm.sh                                     # variables below / from the environment
#   TPU_NAME=gcl-v4-32 ACCELERATOR_TYPE=v4-32 WORKDIR=gs://my-bucket/gcl/r50 \
#     launch/tpu_vm.sh --config.data.root=gs://my-bucket/msls --config.loss.margin=0.7
#
# Extra arguments are passed to main.py unchanged. The workdir must be on GCS (gs://...) so
# that every worker sees the same checkpoints. Set DETACH=1 to leave training running in the
# background (log: ~/$REMOTE_DIR/train.log on each worker) instead of streaming it here.
# Delete the VM when done: gcloud compute tpus tpu-vm delete "$TPU_NAME" --zone "$ZONE".
set -euo pipefail

TPU_NAME="${TPU_NAME:-gcl-jax}"
ZONE="${ZONE:-us-central2-b}"
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-v4-8}"
RUNTIME_VERSION="${RUNTIME_VERSION:-tpu-ubuntu2204-base}"
PROJECT="${PROJECT:-}"                       # empty: gcloud's configured project
SPOT="${SPOT:-0}"                            # 1: create a Spot (preemptible) VM
CONFIG="${CONFIG:-configs/msls.py}"          # may carry a preset: configs/msls.py:contrastive
WORKDIR="${WORKDIR:-gs://YOUR_BUCKET/gcl-jax/msls_r50}"
MODE="${MODE:-train}"                        # main.py --mode: train, eval or label
REPO_URL="${REPO_URL:-}"                     # empty: copy this checkout; else git clone this URL
REPO_REF="${REPO_REF:-main}"                 # branch / tag / commit to check out with REPO_URL
REMOTE_DIR="${REMOTE_DIR:-gcl-jax}"          # relative to the home directory on each worker
DETACH="${DETACH:-0}"

if [[ "$WORKDIR" != gs://* ]]; then
  echo "WORKDIR must be a gs:// path shared by all workers, got '$WORKDIR'" >&2
  exit 2
fi
if [[ "$WORKDIR" == gs://YOUR_BUCKET/* ]]; then
  echo "set WORKDIR to a bucket of yours, e.g. WORKDIR=gs://my-bucket/gcl-jax/r50" >&2
  exit 2
fi

gcloud_tpu=(gcloud compute tpus tpu-vm)
common=(--zone "$ZONE")
if [[ -n "$PROJECT" ]]; then
  common+=(--project "$PROJECT")
fi
on_all_workers() {  # on_all_workers "<remote shell command>"
  "${gcloud_tpu[@]}" ssh "$TPU_NAME" "${common[@]}" --worker=all --command "$1"
}

# 1. Create the VM, or reuse it if it exists.
if "${gcloud_tpu[@]}" describe "$TPU_NAME" "${common[@]}" >/dev/null 2>&1; then
  echo "reusing TPU VM $TPU_NAME ($ZONE)"
else
  create=(create "$TPU_NAME" "${common[@]}" --accelerator-type "$ACCELERATOR_TYPE"
          --version "$RUNTIME_VERSION")
  if [[ "$SPOT" == 1 ]]; then
    create+=(--spot)
  fi
  echo "creating TPU VM $TPU_NAME ($ACCELERATOR_TYPE, $RUNTIME_VERSION, $ZONE)"
  "${gcloud_tpu[@]}" "${create[@]}"
fi
state="$("${gcloud_tpu[@]}" describe "$TPU_NAME" "${common[@]}" --format='value(state)')"
if [[ "$state" != READY ]]; then
  echo "TPU VM $TPU_NAME is in state $state, not READY" >&2
  exit 1
fi

# 2. Code on every worker.
if [[ -n "$REPO_URL" ]]; then
  on_all_workers "set -e; if [ -d $REMOTE_DIR/.git ]; then \
git -C $REMOTE_DIR fetch --quiet origin; \
else git clone --quiet $(printf %q "$REPO_URL") $REMOTE_DIR; fi; \
git -C $REMOTE_DIR checkout --quiet $(printf %q "$REPO_REF")"
else
  repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  tmp_dir="$(mktemp -d)"
  trap 'rm -rf "$tmp_dir"' EXIT
  archive="$tmp_dir/gcl-jax-src.tar.gz"
  # Tracked and untracked-but-not-ignored files: what `git status` would show, no venv or runs.
  (cd "$repo_root" && git ls-files -z --cached --others --exclude-standard \
     | tar --null --ignore-failed-read -T - -czf "$archive")
  "${gcloud_tpu[@]}" scp "$archive" "$TPU_NAME:gcl-jax-src.tar.gz" "${common[@]}" --worker=all
  on_all_workers "set -e; mkdir -p $REMOTE_DIR; tar -xzf gcl-jax-src.tar.gz -C $REMOTE_DIR; \
rm gcl-jax-src.tar.gz"
fi

# 3. Python 3.12 venv with the pinned requirements and the TPU build of the same jax.
on_all_workers "set -e; cd $REMOTE_DIR; \
if ! command -v python3.12 >/dev/null; then \
  sudo add-apt-repository -y ppa:deadsnakes/ppa >/dev/null; sudo apt-get update -qq; \
  sudo apt-get install -y -qq python3.12 python3.12-venv; fi; \
if [ ! -x .venv/bin/python ]; then python3.12 -m venv .venv; fi; \
.venv/bin/pip install --quiet --upgrade pip; \
jax_version=\$(sed -n 's/^jax==//p' requirements.txt); \
.venv/bin/pip install --quiet -r requirements.txt \"jax[tpu]==\$jax_version\"; \
.venv/bin/python -c 'import jax; print(jax.process_index(), jax.device_count(), jax.devices()[0])'"

# 4. Train on all workers.
# --distributed=on: every worker joins the run (jax.distributed.initialize finds the others).
main_args=(--config="$CONFIG" --workdir="$WORKDIR" --mode="$MODE" --distributed=on "$@")
run="cd $REMOTE_DIR && .venv/bin/python main.py $(printf '%q ' "${main_args[@]}")"
if [[ "$DETACH" == 1 ]]; then
  on_all_workers "cd $REMOTE_DIR && \
nohup bash -c $(printf %q "$run") > train.log 2>&1 < /dev/null &"
  echo "training in the background; follow with:"
  echo "  gcloud compute tpus tpu-vm ssh $TPU_NAME --zone $ZONE --worker=0 \\"
  echo "    --command 'tail -f $REMOTE_DIR/train.log'"
else
  on_all_workers "$run"
fi
