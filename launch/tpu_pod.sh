#!/usr/bin/env bash
# Run training on every host of a TPU VM slice (see launch/README.md).
#   bash launch/tpu_pod.sh TPU_NAME ZONE --config=configs/beat.py --workdir=gs://BUCKET/runs/beat [...]
set -euo pipefail
TPU="$1"; ZONE="$2"; shift 2
ARGS="$(printf ' %q' "$@")"
gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --worker=all --command="\
  cd ~/gesture_jax && GESTURE_JAX_DISTRIBUTED=1 .venv/bin/python -m gesture_jax.train$ARGS"
