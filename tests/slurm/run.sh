#!/usr/bin/env bash
# `meddr gsco eval --shard K/N` as a Slurm array job on a real one-node Slurm cluster that this script
# starts itself (Debian's slurm-wlm + munge, installed with apt-get when missing; needs root), then
# `meddr gsco merge` of the N shard files, compared byte for byte with a single-machine run's file.
#
#   tests/slurm/run.sh REFERENCE.jsonl WORKDIR MEDDR [gsco eval arguments without --shard/--out …]
#
# REFERENCE.jsonl is the results file of the same `gsco eval` arguments run unsharded on this machine.
# The shard files, the job logs and merged.jsonl go to WORKDIR; the cluster's configuration, state, logs
# and munge key to a temporary folder (removed on exit unless MEDDR_SLURM_KEEP=1). The daemons (munged,
# slurmctld, slurmd) are started here and stopped on exit, by their process ids.
#
# MEDDR_SLURM_SHARDS: array size N (default 4). Exit status: 0 pass, 1 fail, 77 cannot run here (not root
# and Slurm not installed, or no apt-get): the caller decides whether that is a failure (in CI it is).
#
# What a container without systemd or cgroup access needs (all in the slurm.conf below): proctrack/linuxproc,
# task/none, jobacct_gather/none, no accounting storage, SlurmUser/SlurmdUser root, munged on a private
# socket (AuthInfo=socket=…) with a generated key, the node line from `slurmd -C`, and slurmd -N NODE.
set -euo pipefail

if [ $# -lt 3 ]; then
  echo "usage: $0 REFERENCE.jsonl WORKDIR MEDDR [gsco eval arguments…]" >&2
  exit 2
fi
ref=$(realpath "$1")
work=$(realpath "$2")
meddr=$(realpath "$3")
shift 3
n=${MEDDR_SLURM_SHARDS:-4}
t0=$SECONDS
say() { echo "slurm: $*"; }

# --- Slurm and munge -----------------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
  || ! command -v munged >/dev/null; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    say "SKIP: slurm-wlm and munge are not installed and cannot be installed here (needs root and apt-get)"
    exit 77
  fi
  say "installing slurm-wlm munge (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi
if [ "$(id -u)" != 0 ]; then
  say "SKIP: the daemons of a test cluster run as root here; run as root"
  exit 77
fi
say "$(slurmd -V), $(munged --version 2>&1 | head -n 1 | awk '{print $1}'); ready after $((SECONDS - t0)) s"

# --- the cluster ---------------------------------------------------------------------------------------
# Unix socket paths are short (108 bytes): the cluster lives under /tmp, not under WORKDIR.
d=$(mktemp -d /tmp/meddr-slurm.XXXXXX)
chmod 755 "$d"
mkdir -p "$d/munge" "$d/state" "$d/spool"
# munged: the socket's folder must be searchable by everyone, and no folder above writable by others.
chmod 755 "$d/munge"
pids=()
cleanup() {
  local rc=$?
  if [ -f "$d/slurm.conf" ]; then
    SLURM_CONF="$d/slurm.conf" scancel --quiet --user=root 2>/dev/null || true
  fi
  for f in "$d/slurmd.pid" "$d/slurmctld.pid" "$d/munge/munged.pid"; do
    if [ -s "$f" ]; then
      local p
      p=$(cat "$f")
      kill "$p" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    fi
  done
  if [ $rc != 0 ]; then
    for log in "$d/slurmctld.log" "$d/slurmd.log" "$d/munge/munged.log"; do
      [ -f "$log" ] && { echo "--- $log (last lines)"; tail -n 15 "$log"; }
    done
  fi
  if [ "${MEDDR_SLURM_KEEP:-0}" = 1 ]; then say "kept $d"; else rm -rf "$d"; fi
  exit $rc
}
trap cleanup EXIT

mungekey --create --keyfile="$d/munge/munge.key" 2>/dev/null \
  || dd if=/dev/urandom of="$d/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$d/munge/munge.key"
munged --key-file="$d/munge/munge.key" --socket="$d/munge/sock" --pid-file="$d/munge/munged.pid" \
  --log-file="$d/munge/munged.log" --seed-file="$d/munge/seed"
for _ in $(seq 50); do [ -S "$d/munge/sock" ] && break; sleep 0.1; done
munge --socket="$d/munge/sock" -n | unmunge --socket="$d/munge/sock" >/dev/null

node=$(hostname -s 2>/dev/null || uname -n)
# The node as slurmd sees it (a smaller line would drain the node); addressed on the loopback.
nodeline=$(slurmd -C | head -n 1 | sed "s/^NodeName=[^ ]*/NodeName=$node NodeAddr=127.0.0.1/")
port=$((20000 + RANDOM % 20000))
cat >"$d/slurm.conf" <<EOF
ClusterName=meddrtest
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$d/munge/sock
StateSaveLocation=$d/state
SlurmdSpoolDir=$d/spool
SlurmctldPidFile=$d/slurmctld.pid
SlurmdPidFile=$d/slurmd.pid
SlurmctldLogFile=$d/slurmctld.log
SlurmdLogFile=$d/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
MailProg=/bin/true
$nodeline
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$d/slurm.conf"
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF" -N "$node"
state=
for _ in $(seq 150); do
  state=$(sinfo -h -n "$node" -o %T 2>/dev/null || true)
  [ "$state" = idle ] && break
  sleep 0.2
done
if [ "$state" != idle ]; then
  say "FAIL: node $node is ${state:-not reporting} after 30 s"
  exit 1
fi
say "cluster up (node $node: $(sinfo -h -n "$node" -o '%c CPUs, %m MB')) after $((SECONDS - t0)) s"

# --- the array job -------------------------------------------------------------------------------------
mkdir -p "$work"
rm -f "$work"/shard-*.jsonl "$work/merged.jsonl" "$work"/job-*.out
{
  echo '#!/bin/bash'
  echo 'set -euo pipefail'
  printf 'exec %q gsco eval' "$meddr"
  printf ' %q' "$@"
  # shellcheck disable=SC2016 # expanded by the job, not here
  printf ' --shard "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT" --out %q/shard-"$SLURM_ARRAY_TASK_ID".jsonl --json\n' "$work"
} >"$work/job.sh"
t1=$SECONDS
if ! timeout 900 sbatch --wait --quiet --array=1-"$n" --job-name=meddr-gsco --cpus-per-task=1 \
  --output="$work/job-%a.out" --chdir="$work" "$work/job.sh"; then
  say "FAIL: the array job failed"
  for f in "$work"/job-*.out; do echo "--- $f"; tail -n 20 "$f"; done
  exit 1
fi
say "array job of $n tasks done in $((SECONDS - t1)) s"

# --- merge and compare ---------------------------------------------------------------------------------
shards=()
for k in $(seq "$n"); do shards+=("$work/shard-$k.jsonl"); done
"$meddr" gsco merge "${shards[@]}" -o "$work/merged.jsonl" --json >"$work/merge.json"
if cmp "$work/merged.jsonl" "$ref"; then
  say "PASS: $n array tasks merged into $(($(wc -l <"$ref") - 1)) records, identical to the single-machine run ($((SECONDS - t0)) s in all)"
else
  say "FAIL: $work/merged.jsonl differs from $ref"
  exit 1
fi
