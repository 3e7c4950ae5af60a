#!/usr/bin/env bash
# Start a real single-node SLURM cluster on this machine, idempotently (Debian/Ubuntu, as root or with sudo).
#
#   bash .ci/slurm-up.sh      # then: pytest -m slurm; finally: bash .ci/slurm-down.sh
#
# Installs slurm-wlm and munge with apt when they are missing, writes /etc/slurm/slurm.conf when there is none
# (or when the one there was written by this script), starts munged, slurmctld and slurmd when they are not
# already running, and waits until `sinfo` shows the node idle. Every daemon this script starts is listed in
# $BENCH_SLURM_STATE/started, so that .ci/slurm-down.sh stops exactly those and nothing else.
# Recipe: ../shared/notes/local-slurm.md.
set -euo pipefail

STATE_DIR=${BENCH_SLURM_STATE:-/run/bench-slurm}
STARTED=$STATE_DIR/started
CONF=/etc/slurm/slurm.conf
MARK="# written by bench .ci/slurm-up.sh"
HOST=$(hostname -s)
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi

log() { echo "slurm-up: $*" >&2; }

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
    return
  fi
  log "installing slurm-wlm and munge with apt (about a minute)"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
}

remember() {  # remember NAME PIDFILE: record a daemon this script started
  local pid
  for _ in $(seq 50); do
    if [ -s "$2" ]; then break; fi
    sleep 0.1
  done
  pid=$($SUDO cat "$2" 2>/dev/null || true)
  $SUDO mkdir -p "$STATE_DIR"
  echo "$1 ${pid:-unknown}" | $SUDO tee -a "$STARTED" >/dev/null
  log "started $1 (pid ${pid:-unknown})"
}

start_munge() {
  if [ ! -s /etc/munge/munge.key ]; then
    log "creating /etc/munge/munge.key"
    $SUDO dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  $SUDO mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
  $SUDO chown munge:munge /etc/munge/munge.key /run/munge /var/log/munge /var/lib/munge
  $SUDO chmod 400 /etc/munge/munge.key
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    return
  fi
  $SUDO rm -f /run/munge/munged.pid
  $SUDO su -s /bin/sh munge -c /usr/sbin/munged
  remember munged /run/munge/munged.pid
  munge -n | unmunge >/dev/null || { log "munged does not answer; see /var/log/munge/munged.log"; exit 1; }
}

write_config() {
  local mem text
  if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    log "keeping $CONF (not written by this script)"
    return
  fi
  # RealMemory must not exceed what slurmd measures, or the node is drained: stay well below it, in whole
  # GiB of the total so that the file (and so this script) does not change from one call to the next.
  mem=$(awk '/MemTotal/ {print int($2 / 1048576 * 0.7) * 1024}' /proc/meminfo)
  text="$MARK
ClusterName=bench
SlurmctldHost=$HOST
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
ReturnToService=2
KillWait=30
MinJobAge=600
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=$HOST CPUs=$(nproc) RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP"
  if [ -f "$CONF" ] && [ "$(cat "$CONF")" = "$text" ]; then
    return
  fi
  log "writing $CONF ($(nproc) CPUs, ${mem} MB)"
  $SUDO mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
  echo "$text" | $SUDO tee "$CONF.tmp" >/dev/null
  $SUDO mv "$CONF.tmp" "$CONF"
  if scontrol ping 2>/dev/null | grep -q "is UP"; then
    $SUDO scontrol reconfigure
  fi
}

start_slurm() {
  $SUDO mkdir -p /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
  if ! scontrol ping 2>/dev/null | grep -q "is UP"; then
    $SUDO rm -f /run/slurmctld.pid
    $SUDO slurmctld
    remember slurmctld /run/slurmctld.pid
  fi
  if ! pgrep -x slurmd >/dev/null; then
    $SUDO rm -f /run/slurmd.pid
    $SUDO slurmd
    remember slurmd /run/slurmd.pid
  fi
}

wait_idle() {
  local state=""
  for i in $(seq 120); do
    state=$(sinfo -h -n "$HOST" -o %T 2>/dev/null | head -n1 || true)
    case "$state" in
      idle|mixed|allocated|completing) log "sinfo: node $HOST is $state"; sinfo; return ;;
      down*|drain*|fail*) if [ $((i % 10)) = 0 ]; then $SUDO scontrol update NodeName="$HOST" State=RESUME || true; fi ;;
    esac
    sleep 0.5
  done
  log "the node did not become idle (state: '${state:-no answer}'); the logs say:"
  $SUDO tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
  exit 1
}

install_packages
start_munge
write_config
start_slurm
wait_idle
