#!/usr/bin/env bash
# Stop the single-node cluster started by start-local-cluster.sh (idempotent).
#   sudo bash scripts/slurm/stop-local-cluster.sh [--keep-munge]
# Stops slurmd and slurmctld through their pid files, and munged only if that script
# started it. Job state under $AQA_SLURM_DIR is kept (the next start resumes it).
set -euo pipefail

SLURM_DIR=${AQA_SLURM_DIR:-/var/lib/aqa-slurm}
keep_munge=0
[ "${1:-}" = "--keep-munge" ] && keep_munge=1

log() { echo "[slurm-local] $*"; }

stop_pidfile() {  # name pidfile: TERM, wait up to 10 s, then KILL
  local name=$1 pidfile=$2 pid
  [ -s "$pidfile" ] || { log "$name: not running (no $pidfile)"; return 0; }
  pid=$(cat "$pidfile")
  if ! kill -0 "$pid" 2>/dev/null; then
    log "$name: not running (stale $pidfile)"; rm -f "$pidfile"; return 0
  fi
  log "stopping $name (pid $pid)"
  kill -TERM "$pid"
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && { log "$name did not stop: SIGKILL"; kill -KILL "$pid"; }
  rm -f "$pidfile"
}

stop_pidfile slurmd "$SLURM_DIR/slurmd.pid"
stop_pidfile slurmctld "$SLURM_DIR/slurmctld.pid"
if [ "$keep_munge" = 0 ] && [ -e "$SLURM_DIR/munged.started-here" ]; then
  stop_pidfile munged /run/munge/munged.pid
  rm -f "$SLURM_DIR/munged.started-here"
fi
