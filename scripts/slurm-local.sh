#!/usr/bin/env bash
# A one-node Slurm on this machine: to try `--executor submitit` without a cluster, and for the
# tests marked `slurm` (CI brings it up before the tests and down after them).
#
#   eval "$(scripts/slurm-local.sh up)"   as root: install slurm-wlm and munge if missing, write a
#                                         slurm.conf for this host, start munged, slurmctld and slurmd;
#                                         prints `export SLURM_CONF=...` for sbatch, squeue and qnets
#   scripts/slurm-local.sh status         scontrol ping and sinfo
#   scripts/slurm-local.sh down           stop the daemons it started (by their process ids)
#
# Everything lives in $QNETS_SLURM_DIR (default /tmp/qnets-slurm): slurm.conf, the munge key,
# state, logs and pid files. Accounting is off (there is no slurmdbd), so `sacct` answers nothing;
# qnets follows its jobs with squeue and submitit's own files instead.
set -euo pipefail
dir="${QNETS_SLURM_DIR:-/tmp/qnets-slurm}"
conf="$dir/slurm.conf"
say() { echo "slurm-local: $*" >&2; }

pid_of() { [ -f "$dir/$1.pid" ] && cat "$dir/$1.pid" 2>/dev/null || true; }
alive() { local p; p="$(pid_of "$1")"; [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

up() {
    if [ "$(id -u)" != 0 ]; then say "needs root (it installs packages and starts daemons as root)"; exit 1; fi
    if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
        say "installing slurm-wlm and munge (about a minute)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends slurm-wlm munge >&2
    fi
    mkdir -p "$dir"/{state,spool,munge,log}
    chmod 700 "$dir/munge"
    local host cpus mem_mb
    host="$(hostname -s)"
    cpus="$(nproc)"
    mem_mb="$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)"
    cat > "$conf" <<EOF
# written by scripts/slurm-local.sh: one node, this host, accounting off
ClusterName=qnets-local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire: a requeued job may start again after 5 s (the default, 120 s, would slow every test of requeueing)
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=5
CryptoType=crypto/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldPort=${QNETS_SLURMCTLD_PORT:-6817}
SlurmdPort=${QNETS_SLURMD_PORT:-6818}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge=300
KillWait=5
InactiveLimit=0
SchedulerParameters=sched_interval=2
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    if ! alive munged; then
        [ -f "$dir/munge/munge.key" ] || dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
        chmod 400 "$dir/munge/munge.key"
        munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
            --pid-file="$dir/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munge.seed"
    fi
    export SLURM_CONF="$conf"
    alive slurmctld || slurmctld -c -f "$conf"   # -c: a clean start, no jobs from an earlier one
    alive slurmd || slurmd -f "$conf"
    for _ in $(seq 60); do
        if scontrol ping 2>/dev/null | grep -q "is UP" && sinfo -h -o %T 2>/dev/null | grep -qE "idle|mixed|alloc"; then
            probe
            say "up: one node ($host, $cpus CPUs), partition debug; logs in $dir/log"
            echo "export SLURM_CONF=$conf"
            return 0
        fi
        sleep 0.5
    done
    say "Slurm did not come up within 30 s; see $dir/log"
    down
    exit 1
}

# A daemon that answers is not yet a cluster that runs jobs (a failed launch drains the node and
# every later job waits forever): one batch job must start and end, or the cluster is taken down.
probe() {
    local out="$dir/probe.out" id state
    rm -f "$out"
    id="$(sbatch --parsable --job-name=qnets-probe --output="$out" --time=1 --wrap "echo ran")" || {
        say "sbatch refused a one-line job"; down; exit 1; }
    for _ in $(seq 120); do
        state="$(squeue -h --states=all -j "$id" -o %T 2>/dev/null || true)"
        case "$state" in
            COMPLETED) grep -q ran "$out" 2>/dev/null && return 0 ;;
            FAILED|CANCELLED|TIMEOUT|NODE_FAIL|BOOT_FAIL|OUT_OF_MEMORY) break ;;
        esac
        sleep 0.5
    done
    say "a one-line job did not run (state ${state:-unknown}; node: $(sinfo -h -N -o '%T %E' | head -1)); see $dir/log"
    scancel "$id" 2>/dev/null || true
    down
    exit 1
}

down() {
    local name p
    for name in slurmd slurmctld munged; do
        p="$(pid_of "$name")"
        if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then
            kill "$p"
            for _ in $(seq 40); do kill -0 "$p" 2>/dev/null || break; sleep 0.25; done
            kill -0 "$p" 2>/dev/null && kill -9 "$p"
        fi
        rm -f "$dir/$name.pid"
    done
    say "down"
}

status() {
    SLURM_CONF="$conf" scontrol ping && SLURM_CONF="$conf" sinfo
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
