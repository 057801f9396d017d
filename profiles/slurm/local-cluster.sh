#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, to run the workflow through the SLURM profile for real
# (tests/test_slurm.py): Debian's slurm-wlm and munge, slurmctld and slurmd on localhost, one
# partition named `gpu` as the profile's default (the node has no GPUs; the smoke config asks none),
# no accounting database (job status comes from squeue). Needs root and apt; no systemd: the daemons
# are started directly. Idempotent: a running cluster is left as it is. Exits 3 where it cannot install
# (not root, no apt, no mirror), 1 where the cluster does not come up.
#   profiles/slurm/local-cluster.sh    # then: sinfo, pytest -m slurm
set -euo pipefail

CONF=/etc/slurm/slurm.conf
LOGS=/var/log/slurm
SPOOL=/var/spool/slurm
PARTITION=gpu

die() { echo "local-cluster.sh: $*" >&2; exit 1; }
unavailable() { echo "local-cluster.sh: $*" >&2; exit 3; }

# the node answers: idle, or running jobs
up() { command -v sinfo >/dev/null && sinfo -h -N -n localhost -o %t 2>/dev/null | grep -qxE 'idle|mix|alloc'; }

if up; then
  echo "the local Slurm cluster is up:"; sinfo; exit 0
fi

[ "$(id -u)" -eq 0 ] || unavailable "must run as root (it installs packages and starts daemons)"

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  command -v apt-get >/dev/null || unavailable "slurm-wlm and munge are not installed and there is no apt-get to install them"
  echo "installing slurm-wlm and munge (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || unavailable "apt-get update failed: are the Debian mirrors reachable?"
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null \
    || unavailable "apt-get install slurm-wlm munge failed"
fi

# munge: one key, the daemon as the munge user (it refuses a key that another user owns)
[ -s /etc/munge/munge.key ] || mungekey --create --keyfile /etc/munge/munge.key
chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge /var/log/munge /var/lib/munge
if ! munge -n </dev/null >/dev/null 2>&1; then
  runuser -u munge -- munged || die "munged did not start (see /var/log/munge/munged.log)"
fi
munge -n </dev/null | unmunge >/dev/null 2>&1 || die "munge does not answer (see /var/log/munge/munged.log)"

# slurm.conf: this machine's CPUs, and a memory a little below what it has
cpus=$(nproc)
mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
real_mb=$((mem_mb - (mem_mb / 10 > 1024 ? mem_mb / 10 : 1024)))
mkdir -p "$(dirname "$CONF")" "$LOGS" "$SPOOL/ctld" "$SPOOL/d"
cat >"$CONF" <<EOF
# written by profiles/slurm/local-cluster.sh: a one-node cluster on localhost, no accounting
ClusterName=taps-local
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# squeue reports a finished job for MinJobAge seconds: the executor plugin's status checks need that
MinJobAge=300
ReturnToService=2
StateSaveLocation=$SPOOL/ctld
SlurmdSpoolDir=$SPOOL/d
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$real_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF

running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
running /run/slurmctld.pid || slurmctld || die "slurmctld did not start (see $LOGS/slurmctld.log)"
running /run/slurmd.pid || slurmd -N localhost || die "slurmd did not start (see $LOGS/slurmd.log)"

for _ in $(seq 60); do
  if up; then
    echo "the local Slurm cluster is up ($cpus CPUs, ${real_mb} MB):"; sinfo; exit 0
  fi
  scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true
  sleep 1
done
sinfo >&2 || true
tail -n 20 "$LOGS/slurmctld.log" "$LOGS/slurmd.log" >&2 || true
die "the node did not come up in 60 s (logs above)"
