#!/usr/bin/env bash
# A bucket as a data source (`kind = "s3"`), at scale: SMALL small objects (default 100,000, in
# 1,000 directories) and LARGE objects of 20 MiB (default 5) on a real Garage cluster (3 nodes,
# 3 zones, replication factor 3) on loopback and tmpfs, backed up by holdfast into a local
# repository: the initial run, a run with nothing changed, a run after 1% of the objects changed
# and 0.1% were deleted (with its GET count), a restore into a directory and one into another
# prefix of the bucket, and a drill. Reports wall time and peak RSS of each phase.
#
# usage: bench/bucket.sh [SMALL] [LARGE]
# Environment: HOLDFAST_BIN (default target/release/holdfast, built if missing),
#   HOLDFAST_BENCH_SHM (default /dev/shm/holdfast-bench-bucket, removed at the end),
#   HOLDFAST_BENCH_BUCKET_RESTORES (default 1; 0: backups only, for the memory of large counts).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
small=${1:-100000}
large=${2:-5}
shm=${HOLDFAST_BENCH_SHM:-/dev/shm/holdfast-bench-bucket}
hf=${HOLDFAST_BIN:-$root/target/release/holdfast}
case "$shm" in */holdfast-bench*) ;; *) echo "HOLDFAST_BENCH_SHM must contain 'holdfast-bench'" >&2; exit 2 ;; esac
[ -x "$hf" ] || cargo build --release -p holdfast --manifest-path "$root/Cargo.toml"
cargo build -q --release -p holdfast-backend-opendal --example bucket_fill --manifest-path "$root/Cargo.toml"
fill=$root/target/release/examples/bucket_fill
unset HOLDFAST_INSECURE_TEST_KDF HOLDFAST_REPOSITORY
export HOLDFAST_PASSWORD=holdfast-bench-password

rm -rf "$shm"; mkdir -p "$shm"
cleanup() { bash "$root/scripts/garage-cluster.sh" down "$shm/garage" >/dev/null 2>&1 || true; rm -rf "$shm"; }
trap cleanup EXIT
bash "$root/scripts/garage-cluster.sh" up "$shm/garage" >/dev/null
set -a; . "$shm/garage/env"; set +a
prefix=bench/src/

t0=$(date +%s.%N)
"$fill" fill "$prefix" "$small" "$large"
fill_s=$(echo "$(date +%s.%N) - $t0" | bc)

cat >"$shm/holdfast.toml" <<TOML
[repository.local]
url = "$shm/repo"
password-env = "HOLDFAST_PASSWORD"

[class.critical]
rpo = "15m"
rto = "1h"
keep = { last = 10 }

[[source]]
name = "objects"
kind = "s3"
class = "critical"
strategy = "backup"
bucket = "$HOLDFAST_TEST_BUCKET"
prefix = "$prefix"
TOML
export HOLDFAST_CONFIG=$shm/holdfast.toml HOLDFAST_STATE_DIR=$shm/state HOLDFAST_LOG=info
"$hf" init --repo "$shm/repo" >/dev/null

hour=0
# phase NAME CMD...: wall seconds and peak RSS (MB) of one run, into the table; its output in $shm/log.NAME
printf '%-22s %9s %9s %s\n' phase seconds "RSS MB" notes >"$shm/table"
# (protect's exit code is the workload's status, red until a drill ran: its job's state counts)
phase() {
  local name=$1; shift
  /usr/bin/time -f '%e %M' -o "$shm/time.$name" "$@" >"$shm/log.$name" 2>&1 ||
    { [[ " $* " == *" protect "* ]] && grep -q '"state": *"completed"' "$shm/log.$name"; } ||
    { echo "$name failed:"; tail -20 "$shm/log.$name"; exit 1; }
  read -r secs kb < <(tail -1 "$shm/time.$name")
  local gets; gets=$(grep -o 'gets=[0-9]*' "$shm/log.$name" | tail -1 | cut -d= -f2 || true)
  printf '%-22s %9s %9s %s\n' "$name" "$secs" "$((kb / 1024))" "${gets:+GETs: $gets}" >>"$shm/table"
}
# each protect an hour after the last, so the source is due
protect() { hour=$((hour + 1)); phase "$1" env HOLDFAST_NOW="$(date -u -d "+$hour hour" +%Y-%m-%dT%H:%M:%SZ)" "$hf" --json protect --source objects; }

protect initial
protect no-change
"$fill" change "$prefix" "$small"
"$fill" delete "$prefix" "$small"
protect "1%-changed"
if [ "${HOLDFAST_BENCH_BUCKET_RESTORES:-1}" = 1 ]; then
phase restore-dir "$hf" restore --source objects --target "$shm/out"
rm -rf "$shm/out"
phase restore-bucket "$hf" restore --source objects --target "s3://$HOLDFAST_TEST_BUCKET/bench/restored/"
phase drill "$hf" drill objects
fi

echo "bucket source: $small small objects (200..3200 B), $large x 20 MiB, Garage 3 nodes RF3 (filled in ${fill_s}s)"
cat "$shm/table"
du -sh "$shm/repo" | awk '{print "repository: " $1}'
