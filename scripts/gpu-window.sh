#!/usr/bin/env bash
# One GPU window of the campaign (python -m qnets campaign): one command on a GPU machine of a short
# or preemptible session, which may start without the data and keep nothing but what is under OUT.
#   here, before:  make gpu-prepare           copies the CIFAR-10 archive into .device-data/ (copy it along)
#   on the GPU:    bash scripts/gpu-window.sh OUT [BUDGET_SECONDS=480] [PACK=1]
#   here, after:   make collect DIR=<the folder that came back>, then commit
set -euo pipefail
out=${1:?usage: bash scripts/gpu-window.sh OUT [BUDGET_SECONDS] [PACK]}
budget=${2:-480}
pack=${3:-1}
export PYTHONUNBUFFERED=1
export QNETS_CIFAR10=${QNETS_CIFAR10:-.device-data/cifar10-archive}
if [ ! -f "$QNETS_CIFAR10" ]; then
    echo "gpu-window: no CIFAR-10 archive at $QNETS_CIFAR10: run 'make gpu-prepare' first and copy .device-data along" >&2
    exit 2
fi
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -m qnets campaign run --budget "$budget" --out "$out" --pack "$pack" --quiet
