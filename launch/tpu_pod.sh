#!/usr/bin/env bash
# Train on a Cloud TPU VM pod slice: every worker runs the same command (jax.distributed discovers the
# slice from the TPU metadata, so no coordinator flags are needed).
#
#   TPU=my-v5p-32 ZONE=us-east5-a WORKDIR=/mnt/gcs/run DATA=/mnt/gcs/shards SDXL=/mnt/sdxl \
#     bash launch/tpu_pod.sh [--config.x=y ...]
#
# WORKDIR and DATA are paths every worker sees (e.g. a bucket mounted with gcsfuse at /mnt/gcs on each
# worker): checkpoints are written by all workers into one folder. gs:// URLs are refused.
# On each worker launch.train exits 143 when a SIGTERM (e.g. a maintenance event) stopped the run early with a
# checkpoint (see `python -m launch.train --help`); run this again to resume.
# Assumes the repository is checked out at ~/personacraft-jax on every worker and `make venv` (with the
# tpu extra: .venv/bin/pip install -e '.[tpu]') has been run there.
set -euo pipefail
: "${TPU:?set TPU to the TPU VM name}" "${ZONE:?set ZONE}" "${WORKDIR:?set WORKDIR}" "${DATA:?set DATA}"
CONFIG=${CONFIG:-configs/train_sdxl.py}
EXTRA=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all --command "
  cd ~/personacraft-jax && .venv/bin/python -m launch.train --config=$CONFIG --workdir=$WORKDIR \
    --config.data.data_dir=$DATA ${SDXL:+--config.model.sdxl_folder=$SDXL} --distributed=on $EXTRA"
