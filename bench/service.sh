#!/usr/bin/env bash
# `holdfast serve` with SOURCES path sources on tmpfs (/dev/shm): time to the first round of
# backups, then idle CPU and RSS over IDLE seconds, and the latency of /metrics, /api/snapshot
# and / (p50/p99 over REQUESTS requests each); then the same repository with a year of job and
# drill records added (one backup record a day per source, a drill every 200th, a failure every
# 97th, written by the real writer through crates/holdfast/examples/gen_records.rs), measured
# again. Not part of the test suite. Prints markdown rows (see docs/BENCHMARKS.md).
#
#   bench/service.sh [SOURCES] [IDLE] [REQUESTS]      defaults: 100 60 1000
#
# Environment:
#   HOLDFAST     the binary (default target/release/holdfast if built, else target/debug)
#   GEN_RECORDS  the generator (default next to HOLDFAST: examples/gen_records; build it with
#                `cargo build -p holdfast --example gen_records`)
#   YEAR_STEP    minutes between two generated records of one source (default 1440: daily)
# CPU: utime+stime+cutime+cstime of the service from /proc/PID/stat (children it waited for
# count too, so the run checks that no job ran during the window). RSS: VmHWM and VmRSS.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
n=${1:-100}
idle=${2:-60}
reqs=${3:-1000}
bin=${HOLDFAST:-}
if [ -z "$bin" ]; then
  bin=$root/target/release/holdfast
  [ -x "$bin" ] || bin=$root/target/debug/holdfast
fi
gen=${GEN_RECORDS:-$(dirname "$bin")/examples/gen_records}
step=${YEAR_STEP:-1440}
work=$(mktemp -d /dev/shm/holdfast-service-bench.XXXXXX)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
export HOLDFAST_PASSWORD=bench HOLDFAST_INSECURE_TEST_KDF=1 HOLDFAST_HOSTNAME=bench-host
export HOLDFAST_STATE_DIR=$work/state
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
base=http://127.0.0.1:$port
tck=$(getconf CLK_TCK)

w=$work/holdfast.toml
{
  printf '[repository.r]\nurl = "%s"\npassword-env = "HOLDFAST_PASSWORD"\n\n' "$work/repo"
  printf '[class.c]\nrpo = "1h"\nrto = "1h"\nkeep = { last = 5 }\n\n'
  for i in $(seq 0 $((n - 1))); do
    mkdir -p "$work/data/src$i"
    for f in 1 2 3; do head -c 4096 /dev/urandom >"$work/data/src$i/f$f"; done
    printf '[[source]]\nname = "src%d"\nkind = "path"\npaths = ["%s"]\nclass = "c"\nstrategy = "backup"\n\n' "$i" "$work/data/src$i"
  done
  printf '[service]\nlisten = "127.0.0.1:%s"\n' "$port"
} >"$w"
"$bin" --repo "$work/repo" init >/dev/null

snap() { curl -sf "$base/api/snapshot"; }
# How many sources have a completed backup; how many jobs run now; the newest job's start.
counts() {
  snap | python3 -c 'import json,sys; s=json.load(sys.stdin); print(sum(1 for x in s["sources"] if x["last_success"]), len(s["running"]), max([j["started"] for j in s["jobs"]] or ["none"]), s["at"])'
}
start() {
  "$bin" --config "$w" serve >"$work/serve.log" 2>&1 &
  pid=$!
  for _ in $(seq 300); do curl -sf "$base/healthz" >/dev/null 2>&1 && return; sleep 0.1; done
  echo "holdfast serve did not answer:" >&2; cat "$work/serve.log" >&2; exit 1
}
stop() { kill -TERM "$pid"; wait "$pid" || true; pid=; }
cpu() { awk -v t="$tck" '{ print ($14 + $15 + $16 + $17) / t }' "/proc/$pid/stat"; }
mem() { awk '/^VmHWM|^VmRSS/ { printf "%s %.1f MiB  ", $1, $2 / 1024 }' "/proc/$pid/status"; }
# p50 and p99 of REQUESTS GETs of a path over one keep-alive connection (one curl process).
latency() {
  local k=$work/curl.cfg
  : >"$k"
  for _ in $(seq "$reqs"); do printf 'url = "%s%s"\noutput = "/dev/null"\n' "$base" "$1" >>"$k"; done
  curl -s -K "$k" -w '%{time_total}\n' | sort -n | awk '{ a[NR] = $1 } END {
    printf "p50 %.2f ms, p99 %.2f ms (%d requests)", a[int(NR * 0.5)] * 1000, a[int(NR * 0.99)] * 1000, NR }'
}
wait_idle() { # until every source has a backup and nothing runs
  local t0 c
  t0=$(date +%s)
  while :; do
    read -r ok running _ _ < <(counts)
    [ "$ok" -ge "$n" ] && [ "$running" = 0 ] && break
    [ $(( $(date +%s) - t0 )) -gt 900 ] && { echo "no full round after 900 s ($ok/$n)" >&2; exit 1; }
    sleep 1
  done
  echo $(( $(date +%s) - t0 ))
}
measure() { # LABEL
  local c0 c1 j0 j1 r0 r1
  read -r _ _ j0 _ < <(counts)
  c0=$(cpu)
  sleep "$idle"
  c1=$(cpu)
  read -r _ r1 j1 _ < <(counts)
  local note=""
  [ "$j0" = "$j1" ] && [ "$r1" = 0 ] || note=" (a job ran in the window: newest job $j0 -> $j1, $r1 running)"
  echo "| $1 | idle CPU over ${idle}s | $(echo "scale=3; $c1 - $c0" | bc) s ($(echo "scale=2; 100 * ($c1 - $c0) / $idle" | bc)% of one core)$note |"
  echo "| $1 | memory | $(mem)|"
  echo "| $1 | \`/metrics\` ($(curl -s "$base/metrics" | wc -c) bytes) | $(latency /metrics) |"
  echo "| $1 | \`/api/snapshot\` ($(curl -s "$base/api/snapshot" | wc -c) bytes) | $(latency /api/snapshot) |"
  echo "| $1 | \`/\` (the page, $(curl -s "$base/" | wc -c) bytes) | $(latency /) |"
}

echo "holdfast: $bin ($("$bin" --version)); $n sources; $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
start
secs=$(wait_idle)
echo "| fresh | first round of backups | $secs s for $n sources |"
measure fresh
stop

runs=$((365 * 24 * 60 / step))
t0=$(date +%s)
"$gen" "$work/repo" "$HOLDFAST_PASSWORD" $((runs * n)) "$n" save 2 "$step"
echo "| a year | records written | $((runs * n)) ($runs per source) in $(( $(date +%s) - t0 )) s; \`records/\` holds $(ls "$work/repo/records" | wc -l) objects |"
start
t0=$(date +%s)
while :; do
  read -r ok _ _ _ < <(counts)
  [ "$ok" -ge "$n" ] && break
  sleep 0.5
done
echo "| a year | first snapshot after start | $(( $(date +%s) - t0 )) s |"
measure "a year"
stop
