#!/usr/bin/env bash
# Object storage against a local repository: the same Linux source tree backed up and restored
# by holdfast into a local repository and into a real Garage cluster (3 nodes, 3 zones,
# replication factor 3, all on loopback and tmpfs), and by restic into the same cluster, in one
# run. Reports wall times and the S3/local speed ratio (issue 5 asks for at least 70%).
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
cleanup() { bash "$root/scripts/garage-cluster.sh" down "$shm/garage" >/dev/null 2>&1 || true; rm -rf "$shm"; }
trap cleanup EXIT
bash "$root/scripts/garage-cluster.sh" up "$shm/garage" >/dev/null
set -a; . "$shm/garage/env"; set +a
export AWS_DEFAULT_REGION=$AWS_REGION

now() { date +%s.%N; }
# best-of-N wall time of a command into variable OUT; each round starts from the state `prep` makes
best() { # OUT name prep cmd...
  local out=$1 name=$2 prep=$3; shift 3; local b=""
  for _ in $(seq 1 "$rounds"); do
    eval "$prep"
    local t0; t0=$(now)
    eval "$*" >"$shm/log.$name" 2>&1 || { echo "$name failed:"; tail -20 "$shm/log.$name"; exit 1; }
    local t; t=$(echo "$(now) - $t0" | bc)
    if [ -z "$b" ] || [ "$(echo "$t < $b" | bc)" = 1 ]; then b=$t; fi
  done
  printf -v "$out" '%s' "$b"
}
n=0
fresh_local() { rm -rf "$shm/local"; "$hf" --repo "$shm/local" init >/dev/null; }
fresh_s3() { n=$((n+1)); s3repo="s3://$HOLDFAST_TEST_BUCKET/hf$n"; "$hf" --repo "$s3repo" init >/dev/null; }
fresh_restic() { n=$((n+1)); rrepo="s3:$AWS_ENDPOINT_URL/$HOLDFAST_TEST_BUCKET/restic$n"; restic -r "$rrepo" init >/dev/null; }
clear_out() { rm -rf "$shm/out"; }

size=$(du -sb "$src" | cut -f1); files=$(find "$src" -type f | wc -l)
echo "data: $src ($files files, $((size/1000000)) MB); best of $rounds; tmpfs; Garage 3 nodes RF3 on loopback"
best bl backup-local fresh_local '"$hf" --repo "$shm/local" backup "$src"'
best bs backup-s3 fresh_s3 '"$hf" --repo "$s3repo" backup "$src"'
best rl restore-local clear_out '"$hf" --repo "$shm/local" restore latest "$shm/out"'
diff -r "$src" "$shm/out/linux-old" >/dev/null || { echo "local restore differs"; exit 1; }
best rs restore-s3 clear_out '"$hf" --repo "$s3repo" restore latest "$shm/out"'
diff -r "$src" "$shm/out/linux-old" >/dev/null || { echo "s3 restore differs"; exit 1; }
ratio() { echo "scale=2; $1 / $2" | bc; }
printf '\n| phase | local repository | Garage S3 | S3 speed / local speed |\n|---|---|---|---|\n'
printf '| holdfast backup | %.2f s | %.2f s | %s |\n' "$bl" "$bs" "$(ratio "$bl" "$bs")"
printf '| holdfast restore | %.2f s | %.2f s | %s |\n' "$rl" "$rs" "$(ratio "$rl" "$rs")"
if [ "$with_restic" = 1 ] && command -v restic >/dev/null; then
  export RESTIC_CACHE_DIR=$shm/restic-cache
  best rb restic-backup fresh_restic 'restic -r "$rrepo" backup "$src"'
  best rr restic-restore clear_out 'restic -r "$rrepo" restore latest --target "$shm/out"' 
  printf '| restic backup to the same Garage | | %.2f s | holdfast is %sx faster |\n' "$rb" "$(ratio "$rb" "$bs")"
  printf '| restic restore from the same Garage | | %.2f s | holdfast is %sx faster |\n' "$rr" "$(ratio "$rr" "$rs")"
fi
