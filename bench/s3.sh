#!/usr/bin/env bash
# Object storage against a local repository: the same Linux source tree backed up and restored
# by holdfast into a local repository, into a real Garage cluster (3 nodes, 3 zones, replication
# factor 3) and into a single Garage node (replication factor 1), all on loopback and tmpfs; and
# by restic into the same two stores, in one run. Reports wall times, the S3/local speed ratio
# (issue 5 asks for at least 70%) and the CPU seconds the store itself spent: on one machine the
# store's replicas compete with the client for the same cores.
#
# usage: bench/s3.sh [DATA_DIR]   (default /var/tmp/holdfast-bench; needs DATA_DIR/linux-old,
#                                  fetched by ../shared/bench/fetch-linux-sources.sh)
# Environment: HOLDFAST_BIN (default target/release/holdfast, built if missing),
#   HOLDFAST_BENCH_SHM (default /dev/shm/holdfast-bench-s3, removed at the end),
#   HOLDFAST_BENCH_ROUNDS (default 2; best of N), HOLDFAST_BENCH_RESTIC (default 1).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
data=${1:-/var/tmp/holdfast-bench}
src=$data/linux-old
shm=${HOLDFAST_BENCH_SHM:-/dev/shm/holdfast-bench-s3}
rounds=${HOLDFAST_BENCH_ROUNDS:-2}
with_restic=${HOLDFAST_BENCH_RESTIC:-1}
hf=${HOLDFAST_BIN:-$root/target/release/holdfast}
case "$shm" in */holdfast-bench*) ;; *) echo "HOLDFAST_BENCH_SHM must contain 'holdfast-bench'" >&2; exit 2 ;; esac
[ -d "$src" ] || bash "$root/../shared/bench/fetch-linux-sources.sh" "$data"
[ -x "$hf" ] || cargo build --release -p holdfast --manifest-path "$root/Cargo.toml"
unset HOLDFAST_INSECURE_TEST_KDF HOLDFAST_REPOSITORY
export HOLDFAST_PASSWORD=holdfast-bench-password RESTIC_PASSWORD=holdfast-bench-password

rm -rf "$shm"; mkdir -p "$shm"
cleanup() {
  for c in garage3 garage1; do bash "$root/scripts/garage-cluster.sh" down "$shm/$c" >/dev/null 2>&1 || true; done
  rm -rf "$shm"
}
trap cleanup EXIT
bash "$root/scripts/garage-cluster.sh" up "$shm/garage3" >/dev/null
GARAGE_NODES=1 bash "$root/scripts/garage-cluster.sh" up "$shm/garage1" >/dev/null
use_store() { set -a; . "$shm/$1/env"; set +a; export AWS_DEFAULT_REGION=$AWS_REGION; store=$1; }

now() { date +%s.%N; }
# CPU seconds (user + system) all nodes of the current store have used so far.
store_cpu() {
  local t=0 p
  for f in "$shm/$store"/node*/pid; do
    p=$(cat "$f"); t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "scale=1; $t / $(getconf CLK_TCK)" | bc
}
# best-of-N wall time of a command into variable OUT (and the store's CPU seconds in that round
# into OUT_cpu); each round starts from the state `prep` makes
best() { # OUT name prep cmd...
  local out=$1 name=$2 prep=$3; shift 3; local b="" bc=""
  for _ in $(seq 1 "$rounds"); do
    eval "$prep"
    local c0=0; [ -n "${store:-}" ] && c0=$(store_cpu)
    local t0; t0=$(now)
    eval "$*" >"$shm/log.$name" 2>&1 || { echo "$name failed:"; tail -20 "$shm/log.$name"; exit 1; }
    local t; t=$(echo "$(now) - $t0" | bc)
    local c=0; [ -n "${store:-}" ] && c=$(echo "$(store_cpu) - $c0" | bc)
    if [ -z "$b" ] || [ "$(echo "$t < $b" | bc)" = 1 ]; then b=$t; bc=$c; fi
  done
  printf -v "$out" '%s' "$b"
  printf -v "${out}_cpu" '%s' "$bc"
}
n=0
fresh_local() { rm -rf "$shm/local"; "$hf" --repo "$shm/local" init >/dev/null; }
fresh_s3() { n=$((n+1)); s3repo="s3://$HOLDFAST_TEST_BUCKET/hf$n"; "$hf" --repo "$s3repo" init >/dev/null; }
fresh_restic() { n=$((n+1)); rrepo="s3:$AWS_ENDPOINT_URL/$HOLDFAST_TEST_BUCKET/restic$n"; restic -r "$rrepo" init >/dev/null; }
clear_out() { rm -rf "$shm/out"; }
same() { diff -r "$src" "$shm/out/linux-old" >/dev/null || { echo "$1 restore differs"; exit 1; }; }
ratio() { echo "scale=2; $1 / $2" | bc; }

size=$(du -sb "$src" | cut -f1); files=$(find "$src" -type f | wc -l)
echo "data: $src ($files files, $((size/1000000)) MB); best of $rounds; tmpfs; Garage on loopback"
store=
best bl backup-local fresh_local '"$hf" --repo "$shm/local" backup "$src"'
best rl restore-local clear_out '"$hf" --repo "$shm/local" restore latest "$shm/out"'
same local
use_store garage3
best b3 backup-garage3 fresh_s3 '"$hf" --repo "$s3repo" backup "$src"'
best r3 restore-garage3 clear_out '"$hf" --repo "$s3repo" restore latest "$shm/out"'
same garage3
use_store garage1
best b1 backup-garage1 fresh_s3 '"$hf" --repo "$s3repo" backup "$src"'
best r1 restore-garage1 clear_out '"$hf" --repo "$s3repo" restore latest "$shm/out"'
same garage1
printf '\n| holdfast | local repository | Garage, 3 nodes, RF3 | S3/local | Garage, 1 node | S3/local |\n|---|---|---|---|---|---|\n'
printf '| backup | %.2f s | %.2f s (store CPU %s s) | %s | %.2f s (store CPU %s s) | %s |\n' \
  "$bl" "$b3" "$b3_cpu" "$(ratio "$bl" "$b3")" "$b1" "$b1_cpu" "$(ratio "$bl" "$b1")"
printf '| restore | %.2f s | %.2f s (store CPU %s s) | %s | %.2f s (store CPU %s s) | %s |\n' \
  "$rl" "$r3" "$r3_cpu" "$(ratio "$rl" "$r3")" "$r1" "$r1_cpu" "$(ratio "$rl" "$r1")"
if [ "$with_restic" = 1 ] && command -v restic >/dev/null; then
  export RESTIC_CACHE_DIR=$shm/restic-cache
  printf '\n| restic, same stores | Garage, 3 nodes | holdfast faster by | Garage, 1 node | holdfast faster by |\n|---|---|---|---|---|\n'
  for c in garage3 garage1; do
    use_store $c
    best rb restic-backup-$c fresh_restic 'restic -r "$rrepo" backup "$src"'
    best rr restic-restore-$c 'clear_out; rm -rf "$RESTIC_CACHE_DIR"' 'restic -r "$rrepo" restore latest --target "$shm/out"'
    printf -v "rb_$c" '%s' "$rb"; printf -v "rr_$c" '%s' "$rr"
  done
  printf '| backup | %.2f s | %sx | %.2f s | %sx |\n' "$rb_garage3" "$(ratio "$rb_garage3" "$b3")" "$rb_garage1" "$(ratio "$rb_garage1" "$b1")"
  printf '| restore | %.2f s | %sx | %.2f s | %sx |\n' "$rr_garage3" "$(ratio "$rr_garage3" "$r3")" "$rr_garage1" "$(ratio "$rr_garage1" "$r1")"
fi
