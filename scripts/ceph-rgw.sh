#!/usr/bin/env bash
# A minimal single-host Ceph (Debian bookworm's Pacific, 16.2.x) with one radosgw serving S3 on
# loopback. Unlike Garage it ENFORCES S3 Object Lock (COMPLIANCE/GOVERNANCE retention) and bucket
# policies, so the immutability tests run against it.
#   scripts/ceph-rgw.sh up DIR     start it; writes DIR/env (RGW_* variables, shell-sourceable)
#   scripts/ceph-rgw.sh down DIR   stop every daemon it started (pid files under DIR/pids)
#   scripts/ceph-rgw.sh status DIR show which daemons run and the cluster status
# Everything (config, data, logs, sockets, pid files) lives under DIR; nothing else is touched
# except installing the Debian packages when they are missing. No systemd: one monitor (mon.a),
# one OSD (osd.0) on memstore (RAM, CEPH_RGW_MEMSTORE_MB, default 1024) or, with
# CEPH_RGW_STORE=bluestore, on a sparse file DIR/osd/block (CEPH_RGW_BLOCK_GB, default 20),
# size-1 pools, cephx off (loopback only), and one radosgw (beast) on a free 127.0.0.1 port.
# Use path-style addressing; the SigV4 region is the zonegroup's name, "default".
# CEPH_RGW_PORT picks the S3 port; CEPH_RGW_TIMEOUT (default 120) bounds each wait in seconds.
# With RGW_OWNER_PID set, `up` also starts a watchdog that stops the daemons when that process
# exits (tests pass their own pid, so no daemon outlives the test run).
set -euo pipefail
cmd=${1:?usage: ceph-rgw.sh up|down|status DIR}
dir=${2:?usage: ceph-rgw.sh up|down|status DIR}
if [ "$cmd" = up ]; then mkdir -p "$dir"; fi
[ -d "$dir" ] || { echo "ceph-rgw: no directory $dir" >&2; [ "$cmd" = down ] && exit 0; exit 1; }
dir=$(cd "$dir" && pwd)
conf=$dir/ceph.conf
timeout=${CEPH_RGW_TIMEOUT:-120}
daemons=(mon.a osd.0 client.rgw.a)

die() { echo "ceph-rgw: $*" >&2; exit 1; }
log() { echo "ceph-rgw: $*" >&2; }
# free_ports N: N distinct free TCP ports on 127.0.0.1 (all held open while choosing).
free_ports() {
  python3 -c 'import socket,sys
ss=[socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1",0))
print(" ".join(str(s.getsockname()[1]) for s in ss))' "$1"
}
pid_of() { [ -s "$dir/pids/$1" ] && cat "$dir/pids/$1"; }
# The program a daemon runs as, so a pid file whose pid was reused by another process is ignored.
prog_of() { case "$1" in mon.*) echo ceph-mon ;; osd.*) echo ceph-osd ;; *) echo radosgw ;; esac; }
alive() {
  local p; p=$(pid_of "$1") && [ -n "$p" ] && kill -0 "$p" 2>/dev/null &&
    [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$(prog_of "$1")" ]
}
ceph_cli() { timeout 30 ceph -c "$conf" --connect-timeout 10 "$@"; }
# start NAME LOGNAME CMD...: run a daemon in the foreground mode (-f) in its own session, in the
# background, recording its pid; its stdout/stderr go to DIR/log/NAME.out.
start() {
  local name=$1; shift
  setsid "$@" -f </dev/null >"$dir/log/$name.out" 2>&1 &
  echo $! >"$dir/pids/$name"
}
# wait_for WHAT LOGFILE DAEMON CMD...: poll CMD until it succeeds; fail naming the log to read.
wait_for() {
  local what=$1 logf=$2 daemon=$3; shift 3
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if [ -n "$daemon" ] && ! alive "$daemon"; then
      tail -n 20 "$dir/log/$daemon.out" >&2 2>/dev/null || true
      die "$daemon exited while waiting for $what; read $logf and $dir/log/$daemon.out"
    fi
    [ $SECONDS -lt $deadline ] || die "timed out after ${timeout}s waiting for $what; read $logf"
    sleep 0.5
  done
}

install_packages() {
  local missing=() p
  for p in ceph-mon ceph-osd radosgw ceph-common; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "${missing[@]}" >"$dir/apt.log" 2>&1 || {
    apt-get update -q >>"$dir/apt.log" 2>&1 &&
      apt-get install -y --no-install-recommends "${missing[@]}" >>"$dir/apt.log" 2>&1
  } || die "apt-get install ${missing[*]} failed; read $dir/apt.log"
}

case "$cmd" in
up)
  for d in "${daemons[@]}"; do
    alive "$d" && die "$dir already has a running cluster ($d, pid $(pid_of "$d")); run: $0 down $dir"
  done
  # A stopped cluster left in DIR is thrown away: only the files this script makes.
  if [ -e "$conf" ]; then
    log "discarding the stopped cluster in $dir"
    rm -rf "$dir"/{ceph.conf,keyring,monmap,env,env.tmp,apt.log,log,run,pids,mon,osd,rgw,crash}
  fi
  install_packages
  t0=$SECONDS
  # On any failure stop what was started (the logs stay for reading).
  trap 'rc=$?; [ $rc -eq 0 ] || { log "up failed; stopping the daemons it started"; "$0" down "$dir" >/dev/null 2>&1 || true; }' EXIT
  mkdir -p "$dir"/{log,run,pids,mon,osd/ceph-0,rgw,crash}
  fsid=$(cat /proc/sys/kernel/random/uuid)
  osd_uuid=$(cat /proc/sys/kernel/random/uuid)
  read -r mon_v2 mon_v1 rgw_port < <(free_ports 3)
  rgw_port=${CEPH_RGW_PORT:-$rgw_port}
  store=${CEPH_RGW_STORE:-memstore}
  case "$store" in
  memstore) store_conf="memstore device bytes = $(( ${CEPH_RGW_MEMSTORE_MB:-1024} * 1024 * 1024 ))" ;;
  bluestore) store_conf="bluestore block path = $dir/osd/block
bluestore block create = true
bluestore block size = $(( ${CEPH_RGW_BLOCK_GB:-20} * 1024 * 1024 * 1024 ))
bluestore block db create = false
bluestore block wal create = false
bluestore fsck on mkfs = false
osd memory target = 939524096
bluestore cache autotune = true" ;;
  *) die "CEPH_RGW_STORE must be memstore or bluestore" ;;
  esac
  cat >"$conf" <<CONF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$mon_v2,v1:127.0.0.1:$mon_v1]
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
auth cluster required = none
auth service required = none
auth client required = none
keyring = $dir/keyring
run dir = $dir/run
admin socket = $dir/run/\$cluster-\$name.asok
pid file = $dir/run/\$name.pid
log file = $dir/log/\$name.log
log to stderr = false
err to stderr = true
log to syslog = false
mon cluster log file = $dir/log/ceph.log
crash dir = $dir/crash
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
ms bind ipv6 = false
# radosgw defaults to a "secure"-only mon connection, which cephx-less auth cannot provide.
ms mon client mode = crc secure
[mon]
mon data = $dir/mon/\$cluster-\$id
mon data avail warn = 2
mon data avail crit = 1
# Commit map changes at once rather than batching them for 1 s: startup drops from ~14 s to ~4 s.
paxos propose interval = 0.1
paxos min wait = 0.01
[osd]
osd data = $dir/osd/\$cluster-\$id
osd objectstore = $store
$store_conf
osd op num shards = 1
osd op num threads per shard = 2
[client.rgw.a]
rgw data = $dir/rgw
rgw frontends = beast endpoint=127.0.0.1:$rgw_port
rgw thread pool size = 64
CONF
  # Monitor.
  ceph-authtool --create-keyring "$dir/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool "$dir/keyring" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' \
    --cap mgr 'allow *' >/dev/null
  monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_v2,v1:127.0.0.1:$mon_v1]" \
    "$dir/monmap" >/dev/null
  ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/keyring" \
    >"$dir/log/mkfs-mon.out" 2>&1 || die "ceph-mon --mkfs failed; read $dir/log/mkfs-mon.out"
  start mon.a ceph-mon -c "$conf" -i a
  wait_for "the monitor" "$dir/log/mon.a.log" mon.a ceph_cli mon stat
  log "mon.a up after $((SECONDS - t0))s"
  # OSD.
  ceph_cli osd new "$osd_uuid" >/dev/null
  ceph-osd -c "$conf" -i 0 --mkfs --osd-uuid "$osd_uuid" >"$dir/log/mkfs-osd.out" 2>&1 ||
    die "ceph-osd --mkfs failed; read $dir/log/mkfs-osd.out and $dir/log/osd.0.log"
  start osd.0 ceph-osd -c "$conf" -i 0
  wait_for "osd.0 to come up" "$dir/log/osd.0.log" osd.0 \
    sh -c "ceph -c '$conf' --connect-timeout 10 osd dump 2>/dev/null | grep -q '^osd.0 up'"
  log "osd.0 ($store) up after $((SECONDS - t0))s"
  # radosgw creates its pools (size 1, 8 PGs) on start and answers HTTP once they are active.
  start client.rgw.a radosgw -c "$conf" -n client.rgw.a
  wait_for "radosgw to answer on 127.0.0.1:$rgw_port" "$dir/log/client.rgw.a.log" client.rgw.a \
    sh -c "curl -fsS --max-time 5 'http://127.0.0.1:$rgw_port/' | grep -q ListAllMyBucketsResult"
  log "radosgw answering after $((SECONDS - t0))s"
  # S3 user with full rights over its own buckets.
  key=$(head -c 10 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr a-f A-F)
  secret=$(head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n')
  timeout 60 radosgw-admin -c "$conf" user create --uid=holdfast --display-name=holdfast \
    --access-key="$key" --secret="$secret" >"$dir/log/user-create.out" 2>&1 ||
    die "radosgw-admin user create failed; read $dir/log/user-create.out"
  region=$(timeout 30 radosgw-admin -c "$conf" zonegroup get 2>/dev/null |
    python3 -c 'import json,sys; z=json.load(sys.stdin); print(z.get("api_name") or z["name"])' ||
    echo default)
  cat >"$dir/env.tmp" <<ENV
RGW_ENDPOINT=http://127.0.0.1:$rgw_port
RGW_ACCESS_KEY_ID=$key
RGW_SECRET_ACCESS_KEY=$secret
RGW_REGION=$region
RGW_CONF=$conf
ENV
  mv "$dir/env.tmp" "$dir/env"
  if [ -n "${RGW_OWNER_PID:-}" ]; then
    (
      while kill -0 "$RGW_OWNER_PID" 2>/dev/null; do sleep 1; done
      "$0" down "$dir" >/dev/null 2>&1
    ) >/dev/null 2>&1 </dev/null &
  fi
  log "up in $((SECONDS - t0))s: S3 at http://127.0.0.1:$rgw_port (region $region, path-style); env in $dir/env"
  ;;
down)
  [ -d "$dir/pids" ] || { log "nothing running in $dir"; exit 0; }
  # radosgw first, then the OSD, then the monitor; SIGTERM, then SIGKILL after 10 s.
  for d in client.rgw.a osd.0 mon.a; do
    p=$(pid_of "$d") || continue
    alive "$d" || { rm -f "$dir/pids/$d"; continue; }
    kill "$p" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$p" 2>/dev/null && { log "$d (pid $p) ignored SIGTERM; killing"; kill -9 "$p" 2>/dev/null || true; }
    rm -f "$dir/pids/$d"
  done
  log "stopped"
  ;;
status)
  for d in "${daemons[@]}"; do
    if alive "$d"; then echo "$d: running (pid $(pid_of "$d"))"; else echo "$d: stopped"; fi
  done
  alive mon.a && ceph_cli -s || true
  ;;
*) die "usage: ceph-rgw.sh up|down|status DIR" ;;
esac
