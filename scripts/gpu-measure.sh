#!/usr/bin/env bash
# The measurements still owed on a card, as one command on a GPU machine (a few minutes):
#   1. tests/test_gpu.py (the compiled, graphed bf16 step against eager fp32; a replayed float32
#      step against the eager one; runs side by side on streams against their lone runs), with
#      pytest from .device-data/pylib.zip;
#   2. the precision measurement (python -m qnets precision: what of a quadratic layer's small terms
#      survives each precision on this card, and short trainings in each), into OUT/precision-<gpu>.json;
#   3. packing by CUDA streams with every run compiled (runs of one network share one
#      compilation), ResNet-20 and ResNet-56 quadratic, K = 2, 4, 8, 16, after the lone fast
#      path as the baseline, merged into the committed results/bench/<gpu>-packing.json.
#   here, before:  make gpu-prepare            (copy .device-data with the repository)
#   on the GPU:    bash scripts/gpu-measure.sh OUT [BENCH_BUDGET_SECONDS=150]   (about 5 minutes in all)
#   here, after:   copy OUT/*-packing.json and OUT/precision-*.json into results/bench/ and run make readme (it regenerates
#                  the tables of results/bench/README.md; a new device's report needs its marker),
#                  read OUT/gpu-tests.txt, commit
set -uo pipefail
out=${1:?usage: bash scripts/gpu-measure.sh OUT [BENCH_BUDGET_SECONDS]}
budget=${2:-150}
export PYTHONUNBUFFERED=1
export QNETS_CIFAR10=${QNETS_CIFAR10:-.device-data/cifar10-archive}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
# the tests first: they decide whether the campaign may use this path
if [ -f .device-data/pylib.zip ]; then
    PYTHONPATH=.device-data/pylib.zip timeout 150 python3 -m pytest -q -p no:cacheprovider -m "slow or not slow" \
        tests/test_gpu.py > "$out/gpu-tests.txt" 2>&1
    echo "tests/test_gpu.py: exit $? (OUT/gpu-tests.txt)"
    tail -5 "$out/gpu-tests.txt"
else
    echo "no .device-data/pylib.zip: run 'make gpu-prepare' first and copy .device-data along" | tee "$out/gpu-tests.txt"
fi
timeout 150 python3 -m qnets precision --device cuda --out "$out" --quiet 2>&1 | grep -v Warning | tail -n 30
cp results/bench/*-packing.json "$out"/ 2>/dev/null || true  # the bench merges its rows into these
python3 -m qnets bench --pack 2,4,8,16 --pack-compile on --depths 20,56 \
    --neurons quadratic --data synthetic --out "$out" --budget "$budget" 2>&1 | grep --line-buffered -v Warning
