#!/usr/bin/env bash
# `holdfast status` on a repository holding COUNT job and drill records of SOURCES sources:
# wall time and requests, on a local directory and on a Garage cluster (scripts/garage-cluster.sh,
# three nodes). Not run in CI. Results are printed as markdown rows (see docs/BENCHMARKS.md).
#
#   bench/status-records.sh [COUNT] [SOURCES]        defaults: 50000 10
#
# Environment:
#   HOLDFAST_NEW  the holdfast under test (default target/debug/holdfast); its records are
#                 written by the real writer (`records::save`, which compacts)
#   HOLDFAST_OLD  optional: an earlier holdfast (e.g. main's) to compare; its repository is
#                 written with `records::store` (every record kept, as earlier writers did)
#   GEN_RECORDS   the generator (default target/debug/examples/gen_records; build it with
#                 `cargo build -p holdfast --example gen_records`)
#   BENCH_GARAGE=0  skip the Garage measurement; BENCH_GARAGE_OLD=0 skip only HOLDFAST_OLD's
#                 (about 25 ms per record read, three reads per record)
# Requests: local = openat(2) calls under the repository (strace -f); Garage = requests the
# S3 endpoint node logged (`generic_server` lines) during the run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
count=${1:-50000}
sources=${2:-10}
new=${HOLDFAST_NEW:-$root/target/debug/holdfast}
old=${HOLDFAST_OLD:-}
gen=${GEN_RECORDS:-$root/target/debug/examples/gen_records}
work=$(mktemp -d /var/tmp/holdfast-status-records.XXXXXX)
trap 'bash "$root/scripts/garage-cluster.sh" down "$work/garage" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
export HOLDFAST_PASSWORD=bench HOLDFAST_INSECURE_TEST_KDF=1

workload() { # URL -> workload file with SOURCES path sources
  local f=$work/w-$RANDOM.toml
  {
    printf '[repository.r]\nurl = "%s"\npassword-env = "HOLDFAST_PASSWORD"\n\n' "$1"
    printf '[class.c]\nrpo = "1h"\nrto = "1h"\nkeep = { last = 5 }\ndrill-every = "7d"\n\n'
    for i in $(seq 0 $((sources - 1))); do
      printf '[[source]]\nname = "src%d"\nkind = "path"\npath = "%s"\nclass = "c"\nstrategy = "backup"\n\n' "$i" "$work/data"
    done
  } >"$f"
  echo "$f"
}

status() { # BIN WORKLOAD -> seconds (status exits non-zero: no recovery points)
  local s e
  s=$(date +%s.%N)
  "$1" --config "$2" --json status --no-discover >"$work/out.json" 2>"$work/err" || true
  e=$(date +%s.%N)
  grep -q '"sources"' "$work/out.json" || { cat "$work/err" >&2; exit 1; }
  echo "$e - $s" | bc
}

mkdir -p "$work/data"
declare -A repo
for v in old new; do
  bin=$new mode=save
  [ $v = old ] && { [ -n "$old" ] || continue; bin=$old mode=store; }
  r=$work/$v/repo
  "$bin" --repo "$r" init >/dev/null
  t0=$(date +%s)
  "$gen" "$r" bench "$count" "$sources" $mode 4
  echo "$v: $count records written ($mode) in $(( $(date +%s) - t0 ))s; records/ holds $(ls "$r/records" | wc -l) objects" >&2
  repo[$v]=$r
  w=$(workload "$r")
  status "$bin" "$w" >/dev/null # warm the page cache
  secs=$(status "$bin" "$w")
  strace -f -qq -e trace=openat -o "$work/trace" "$bin" --config "$w" status --no-discover >/dev/null 2>&1 || true
  opens=$(grep -c "\"$r/" "$work/trace" || true)
  rec=$(grep -c "\"$r/records/" "$work/trace" || true)
  echo "| local | $v | $count | $(ls "$r/records" | wc -l) | $secs | $opens ($rec in records/) |"
done

[ "${BENCH_GARAGE:-1}" = 0 ] && exit 0
bash "$root/scripts/garage-cluster.sh" up "$work/garage" >/dev/null
set -a; . "$work/garage/env"; set +a
log=$work/garage/node1/log
for v in old new; do
  [ -n "${repo[$v]:-}" ] || continue
  [ $v = old ] && [ "${BENCH_GARAGE_OLD:-1}" = 0 ] && continue
  bin=$new; [ $v = old ] && bin=$old
  aws --region garage s3 sync --quiet "${repo[$v]}" "s3://$HOLDFAST_TEST_BUCKET/$v"
  w=$(workload "s3://$HOLDFAST_TEST_BUCKET/$v")
  status "$bin" "$w" >/dev/null
  before=$(wc -l <"$log")
  secs=$(status "$bin" "$w")
  sleep 0.5
  tail -n +$((before + 1)) "$log" | grep 'generic_server.*(key ' >"$work/requests" || true
  all=$(wc -l <"$work/requests")
  gets=$(grep -c ' GET /[^?]*/[^?]' "$work/requests" || true)
  echo "| Garage (3 nodes) | $v | $count | $(ls "${repo[$v]}/records" | wc -l) | $secs | $all ($gets object GETs) |"
done
