#!/usr/bin/env bash
# Stop what tests/slurm/start.sh started, each daemon by its pid file (never by name).
# Idempotent (a daemon that is not running is skipped) and bounded (TERM, wait up to 10 s, KILL).
set -uo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
stop_pidfile() { # stop_pidfile <name> <pidfile>: stop <name> if the pid in <pidfile> is <name>
  local pf=$2 pid
  pid=$($SUDO cat "$pf" 2>/dev/null) || return 0
  [ -n "$pid" ] || return 0
  # a stale pid file (daemon killed without cleanup) may name a pid reused by something else
  if [ "$($SUDO cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ]; then
    $SUDO kill "$pid" 2>/dev/null
    for _ in $(seq 1 40); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.25
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "[slurm stop] $1 ($pid) did not stop in 10s, sending KILL"
      $SUDO kill -9 "$pid" 2>/dev/null
    fi
    echo "[slurm stop] stopped $1 ($pid)"
  fi
  return 0
}
# jobs left over from an interrupted test run
if command -v scancel >/dev/null && [ -s /run/slurmctld.pid ]; then
  timeout 10 scancel --user="$(id -un)" 2>/dev/null || true
fi
stop_pidfile slurmd /run/slurmd.pid
stop_pidfile slurmctld /run/slurmctld.pid
stop_pidfile slurmdbd /run/slurmdbd.pid
# mariadbd-safe exits by itself once mariadbd stops cleanly (TERM is a clean shutdown)
stop_pidfile mariadbd /run/mysqld/mysqld.pid
stop_pidfile munged /run/munge/munged.pid
exit 0
