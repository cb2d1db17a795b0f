#!/usr/bin/env bash
# One CPU window of the campaign's cpu plan (python -m qnets campaign --preset cpu), on this machine:
# trains the next runs, niced so that other work keeps priority, until BUDGET is nearly spent, then
# collects them (finished results into results/runs/, the checkpoints of unfinished runs into
# results/campaign/partial/, both committed), prints where the plan stands and, when it finished a
# run, re-renders the notebooks and READMEs from the results. `make cpu-window`
# starts it in the background; `make cpu-window-stop` (SIGTERM) ends it early, keeping every epoch
# but the one in flight.
#   bash scripts/cpu-window.sh BUDGET      (seconds, or 90m, 5h, 1h30m)
set -euo pipefail
budget=${1:?usage: bash scripts/cpu-window.sh BUDGET (seconds, or 90m, 5h, 1h30m)}
python=${PYTHON:-.venv/bin/python}
out=results/campaign/cpu-window
export PYTHONUNBUFFERED=1
if [ -z "${QNETS_CIFAR10:-}" ] && [ ! -f data/cifar10-uint8.pt ] && [ ! -d data/cifar-10-batches-py ] \
        && [ ! -f data/cifar-10-python.tar.gz ]; then
    echo "cpu-window: no CIFAR-10 here: run 'make data' (QNETS_CIFAR10=<archive or folder> where offline)" >&2
    exit 2
fi
echo "cpu-window: started $(date -u +%FT%TZ), budget $budget, pid $$"
rm -rf "$out"  # an older window's folder must never be collected again (it would roll partial runs back)
status=0
# SCHED_IDLE where chrt exists: the window takes only cores nothing else wants. (Nice alone is not
# enough: torch's OpenMP threads in a foreground process spin for every slice the window is given.)
idle=()
if command -v chrt >/dev/null && chrt -i 0 true 2>/dev/null; then idle=(chrt -i 0); fi
# Where the kernel groups each session's processes (autogroup), a process's priority counts only inside
# its group, and the group competes with every other session as an equal: in a session of its own (as
# `make cpu-window` starts it) the window lowers its group's priority too.
if [ "$(ps -o sid= -p $$ 2>/dev/null | tr -d " ")" = "$$" ] && [ -w /proc/self/autogroup ] \
        && [ "$(cat /proc/sys/kernel/sched_autogroup_enabled 2>/dev/null)" = 1 ]; then
    echo 19 > /proc/self/autogroup 2>/dev/null || true
fi
"${idle[@]}" nice -n 19 "$python" -m qnets campaign run --preset cpu --budget "$budget" --out "$out" --quiet &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM INT
wait "$child" || status=$?
while kill -0 "$child" 2>/dev/null; do  # a trapped signal ends the wait, not the run: wait for its exit
    status=0
    wait "$child" || status=$?
done
if [ -f "$out/summary.json" ]; then
    "$python" -m qnets campaign collect "$out"
    "$python" -m qnets campaign status --preset cpu | tail -n 1
    # notebooks read at the cpu preset change with every run it finished: re-render them and the READMEs
    if "$python" -c "import json, sys; sys.exit(not json.load(open('$out/summary.json'))['finished'])"; then
        nice -n 19 "$python" -m qnets notebooks --execute --preset auto notebooks/[0-9][0-9]_*.ipynb > "$out.render.log" 2>&1 \
            && "$python" -m qnets readme > /dev/null || echo "cpu-window: re-rendering failed: see $out.render.log"
    fi
fi
rm -f "$out.pid"
echo "cpu-window: ended $(date -u +%FT%TZ); commit results/, notebooks/, figures/ and the READMEs"
exit "$status"
