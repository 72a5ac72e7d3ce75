#!/usr/bin/env bash
# Start a single-node Slurm cluster on 127.0.0.1 for the `slurm`-marked tests (and CI).
#
# Installs what is missing from Debian (munge, slurmctld, slurmd, slurm-client, slurmdbd,
# mariadb-server), writes /etc/slurm/*.conf and starts munged, MariaDB, slurmdbd, slurmctld and
# slurmd as plain daemons: no systemd, no cgroups. Idempotent: when the cluster already answers
# with this exact configuration it returns at once; when the configuration changed it restarts
# the Slurm daemons. Every wait is bounded; a failure prints the daemon's log tail and exits 1.
# Stop everything with tests/slurm/stop.sh (by pid file, never by name).
#
# Partitions: `cpu` (the default) and, with fake GPUs, `gpu`; both hold the one node, so
# profiles/slurm's partitions.yaml routes GPU jobs to `gpu` exactly as on a real site.
#
# Env knobs:
#   SLURM_WITH_DBD=1       MariaDB + slurmdbd so that `sacct` works (default 1; the tests need it)
#   SLURM_FAKE_GPUS=N      advertise N fake GPUs, gres gpu:<type>:N with File=/dev/null (default 1)
#   SLURM_GPU_TYPE=a100    type name of the fake GPUs
#   SLURM_NODE_CPUS=N      CPUs the node declares (default: max(nproc, 2))
#   SLURM_NODE_MEM_MB=N    memory the node declares (default: max(85% of RAM, 8192)); with
#                          SlurmdParameters=config_overrides the node may declare more than it
#                          has, so the workflow's real mem_mb requests (up to 6000) schedule on
#                          small CI runners. Nothing enforces memory here (no cgroups).
#   SLURM_APT_TIMEOUT=900  seconds allowed for apt-get update + install
#   SLURM_FORCE_RESTART=1  restart the Slurm daemons even if the cluster already answers
set -euo pipefail
T0=$(date +%s.%N)
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
WITH_DBD=${SLURM_WITH_DBD:-1}
FAKE_GPUS=${SLURM_FAKE_GPUS:-1}
GPU_TYPE=${SLURM_GPU_TYPE:-a100}
APT_TIMEOUT=${SLURM_APT_TIMEOUT:-900}
NODE=localhost
log() { printf '[slurm start %6.1fs] %s\n' "$(awk -v a="$(date +%s.%N)" -v b="$T0" 'BEGIN{print a-b}')" "$*"; }
die() {
  echo "[slurm start] ERROR: $1" >&2
  shift
  for f in "$@"; do [ -f "$f" ] && { echo "--- tail $f" >&2; $SUDO tail -n 25 "$f" >&2; }; done
  exit 1
}
wait_for() { # wait_for <secs> <cmd...>: poll every 0.5 s, give up after <secs>
  local n=$1
  shift
  for _ in $(seq 1 $((n * 2))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  return 1
}
port_open() { (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# pid_of <pidfile> <name>: the pid in <pidfile> if that process is alive and is <name> (a stale pid
# file left by a killed daemon may name a pid that now belongs to something else)
pid_of() {
  local pid
  pid=$($SUDO cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ "$($SUDO cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] && echo "$pid"
}
node_up() { timeout 5 sinfo -h -n "$NODE" -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated|completing)'; }

# ------------------------------------------------------------------ packages
PKGS=(munge slurmctld slurmd slurm-client)
[ "$WITH_DBD" = 1 ] && PKGS+=(slurmdbd mariadb-server)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]} (apt, at most ${APT_TIMEOUT}s)"
  # keep the packages' postinst scripts from trying to start daemons (there is no systemd)
  created_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    created_policy=1
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT # also when apt fails
  fi
  deadline=$(($(date +%s) + APT_TIMEOUT))
  $SUDO timeout "$APT_TIMEOUT" apt-get update -qq || die "apt-get update failed or timed out"
  left=$((deadline - $(date +%s)))
  [ "$left" -gt 10 ] || die "no time left for apt-get install"
  $SUDO env DEBIAN_FRONTEND=noninteractive timeout "$left" \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
    die "apt-get install ${missing[*]} failed or timed out"
  if [ $created_policy = 1 ]; then
    $SUDO rm -f /usr/sbin/policy-rc.d
    trap - EXIT
  fi
  log "installed ${missing[*]}"
fi

# ------------------------------------------------------------------ configuration
NPROC=$(nproc)
CPUS=${SLURM_NODE_CPUS:-$((NPROC > 2 ? NPROC : 2))}
REAL_MB=$(awk '/MemTotal/ {printf "%d", $2/1024*0.85}' /proc/meminfo)
MEM_MB=${SLURM_NODE_MEM_MB:-$((REAL_MB > 8192 ? REAL_MB : 8192))}
GRES_NODE=""
GRES_TYPES=""
GRES_CONF=""
GPU_PARTITION=""
if [ "$FAKE_GPUS" -gt 0 ]; then
  GRES_NODE="Gres=gpu:${GPU_TYPE}:${FAKE_GPUS}"
  GRES_TYPES="GresTypes=gpu"
  for _ in $(seq 1 "$FAKE_GPUS"); do
    GRES_CONF+="NodeName=$NODE Name=gpu Type=$GPU_TYPE File=/dev/null"$'\n'
  done
  GPU_PARTITION="PartitionName=gpu Nodes=$NODE MaxTime=INFINITE State=UP"
fi
if [ "$WITH_DBD" = 1 ]; then
  ACCT="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStorageTRES=gres/gpu,gres/gpu:$GPU_TYPE
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux"
else
  ACCT="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
fi
SLURM_CONF="# generated by ragd-train tests/slurm/start.sh: single node on 127.0.0.1, no cgroups
ClusterName=ci
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SlurmdParameters=config_overrides
$ACCT
JobCompType=jobcomp/none
ReturnToService=2
MinJobAge=300
KillWait=5
MailProg=/bin/true
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
$GRES_TYPES
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB $GRES_NODE State=UNKNOWN
PartitionName=cpu Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
$GPU_PARTITION"

same_file() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }
config_same=1
same_file /etc/slurm/slurm.conf "$SLURM_CONF" || config_same=0
if [ -n "$GRES_CONF" ]; then
  same_file /etc/slurm/gres.conf "${GRES_CONF%$'\n'}" || config_same=0
elif [ -e /etc/slurm/gres.conf ]; then
  config_same=0
fi

# ------------------------------------------------------------------ fast path
if [ "${SLURM_FORCE_RESTART:-0}" != 1 ] && [ $config_same = 1 ] && command -v sinfo >/dev/null &&
  pid_of /run/slurmctld.pid slurmctld >/dev/null && pid_of /run/slurmd.pid slurmd >/dev/null && node_up &&
  { [ "$WITH_DBD" != 1 ] || timeout 10 sacct -n -X -S now-1minutes >/dev/null 2>&1; }; then
  log "cluster already up: $(sinfo -h -o '%P %T %c cpus %m MB gres=%G' | tr '\n' ';')"
  exit 0
fi

$SUDO mkdir -p /etc/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm
printf '%s\n' "$SLURM_CONF" | $SUDO tee /etc/slurm/slurm.conf >/dev/null
if [ -n "$GRES_CONF" ]; then
  printf '%s' "$GRES_CONF" | $SUDO tee /etc/slurm/gres.conf >/dev/null
else
  $SUDO rm -f /etc/slurm/gres.conf
fi

# ------------------------------------------------------------------ munge
if [ ! -s /etc/munge/munge.key ]; then
  $SUDO mkdir -p /etc/munge
  $SUDO dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
fi
$SUDO chown -R munge:munge /etc/munge
$SUDO chmod 700 /etc/munge
$SUDO chmod 400 /etc/munge/munge.key
$SUDO mkdir -p /run/munge /var/log/munge /var/lib/munge
$SUDO chown munge:munge /run/munge /var/log/munge /var/lib/munge
$SUDO chmod 755 /run/munge
if ! timeout 5 bash -c 'munge -n | unmunge' >/dev/null 2>&1; then
  $SUDO runuser -u munge -- /usr/sbin/munged
  wait_for 15 bash -c 'timeout 5 munge -n | timeout 5 unmunge' || die "munged did not answer in 15s" /var/log/munge/munged.log
fi
log "munge ok"

# ------------------------------------------------------------------ mariadb + slurmdbd
if [ "$WITH_DBD" = 1 ]; then
  $SUDO mkdir -p /run/mysqld
  $SUDO chown mysql:mysql /run/mysqld
  if [ ! -d /var/lib/mysql/mysql ]; then
    $SUDO timeout 120 mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null ||
      die "mariadb-install-db failed"
  fi
  if ! timeout 5 $SUDO mariadb-admin ping >/dev/null 2>&1; then
    # mariadbd-safe writes the server's pid to /run/mysqld/mysqld.pid (stop.sh kills by it)
    $SUDO bash -c 'nohup mariadbd-safe --user=mysql --bind-address=127.0.0.1 \
      --pid-file=/run/mysqld/mysqld.pid >/var/log/slurm/mariadbd-safe.log 2>&1 &'
    wait_for 60 timeout 5 $SUDO mariadb-admin ping || die "MariaDB did not answer in 60s" /var/log/slurm/mariadbd-safe.log
  fi
  timeout 30 $SUDO mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmci';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;" || die "could not create slurm_acct_db"
  log "mariadb ok"
  DBD_CONF="AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=slurmci"
  printf '%s\n' "$DBD_CONF" | $SUDO tee /etc/slurm/slurmdbd.conf >/dev/null
  $SUDO chmod 600 /etc/slurm/slurmdbd.conf
  if ! pid_of /run/slurmdbd.pid slurmdbd >/dev/null || ! port_open 6819; then
    $SUDO /usr/sbin/slurmdbd
    wait_for 30 port_open 6819 || die "slurmdbd did not listen on 6819 in 30s" /var/log/slurm/slurmdbd.log
  fi
  # idempotent: sacctmgr exits 1 with "Nothing new added" when the entity exists
  $SUDO timeout 20 sacctmgr -i add cluster ci >/dev/null 2>&1 || true
  $SUDO timeout 20 sacctmgr -i add account ci Description=ci Organization=ci >/dev/null 2>&1 || true
  for u in root "${SUDO_USER:-}" "$(id -un)"; do
    if [ -n "$u" ] && id "$u" >/dev/null 2>&1; then
      $SUDO timeout 20 sacctmgr -i add user "$u" Account=ci DefaultAccount=ci >/dev/null 2>&1 || true
    fi
  done
  log "slurmdbd ok"
fi

# ------------------------------------------------------------------ slurmctld + slurmd
for d in slurmd slurmctld; do # (re)start so that the configuration just written is the one in use
  if pid=$(pid_of "/run/$d.pid" "$d"); then
    $SUDO kill "$pid"
    wait_for 15 bash -c "! kill -0 $pid" || { $SUDO kill -9 "$pid" 2>/dev/null || true; }
  fi
done
$SUDO /usr/sbin/slurmctld
wait_for 30 port_open 6817 || die "slurmctld did not listen on 6817 in 30s" /var/log/slurm/slurmctld.log
$SUDO /usr/sbin/slurmd -N "$NODE"
if ! wait_for 30 node_up; then
  $SUDO timeout 10 scontrol update nodename=$NODE state=resume || true
  wait_for 15 node_up || {
    timeout 10 scontrol show node $NODE >&2 || true
    die "node $NODE did not come up in 45s" /var/log/slurm/slurmd.log /var/log/slurm/slurmctld.log
  }
fi
log "slurm up: $(sinfo -h -o '%P %T %c cpus %m MB gres=%G' | tr '\n' ';')"

# ------------------------------------------------------------------ smoke test
SMOKE=ragd-smoke-$$
timeout 60 srun -N1 -t 1 -J "$SMOKE" hostname >/dev/null ||
  die "srun smoke test failed" /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log
if [ "$WITH_DBD" = 1 ]; then
  wait_for 20 bash -c "timeout 5 sacct -n -X -S now-10minutes --name $SMOKE -o State | grep -q COMPLETED" ||
    die "sacct does not show the smoke-test job as COMPLETED after 20s" /var/log/slurm/slurmdbd.log
fi
log "smoke test ok (srun$([ "$WITH_DBD" = 1 ] && echo ' + sacct'))"
