#!/usr/bin/env bash
# Stop the SLURM daemons that .ci/slurm-up.sh started (listed in $BENCH_SLURM_STATE/started), newest first.
# Daemons that were already running before slurm-up.sh are left alone; packages and configs stay installed.
set -euo pipefail

STATE_DIR=${BENCH_SLURM_STATE:-/run/bench-slurm}
STARTED=$STATE_DIR/started
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi

log() { echo "slurm-down: $*" >&2; }

if [ ! -s "$STARTED" ]; then
  log "nothing to stop (no $STARTED)"
  exit 0
fi
if grep -q '^slurmctld ' "$STARTED" && command -v scancel >/dev/null; then
  # The controller is ours, so are its jobs: end them before their daemons go away.
  $SUDO scancel --full --user="$(id -un)" 2>/dev/null || true
  for _ in $(seq 60); do
    if [ -z "$(squeue -h 2>/dev/null)" ]; then break; fi
    sleep 0.5
  done
fi
tac "$STARTED" | while read -r name pid; do
  if [ "$pid" = unknown ] || [ ! -d "/proc/$pid" ] || [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != "$name" ]; then
    log "$name (pid $pid) is not running"
    continue
  fi
  $SUDO kill "$pid"
  for _ in $(seq 100); do
    if [ ! -d "/proc/$pid" ]; then break; fi
    sleep 0.1
  done
  log "stopped $name (pid $pid)"
done
$SUDO rm -f "$STARTED"
