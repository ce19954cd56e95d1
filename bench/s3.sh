#!/usr/bin/env bash
# Object storage against a local repository: the same Linux source tree backed up and restored
# by holdfast into a local repository, into a real Garage cluster (3 nodes, 3 zones, replication
# factor 3) and into a single Garage node (replication factor 1), all on loopback and tmpfs; and
# by restic into the same two stores, in one run. Reports per phase and store: wall time, the
# client's own CPU (user + system, /usr/bin/time), the CPU the store's processes spent, the
# requests the store served (the S3 endpoint node's `generic_server` log lines, by method) and
# requests per GB of source, the plain S3/local ratio and the "accounted" ratio
#   local wall / (S3 wall - store CPU / cores)
# which removes the store's CPU from the S3 run as if it had run on other cores, assuming the
# client could have used every freed core-second (so it is an upper bound on the client's speed
# against a store elsewhere: the plain ratio is the lower bound).
# holdfast runs in interleaved rounds (each round: local backup and restore, then each store's),
# so a slow minute of a shared machine hits both sides of a ratio; a row gives the medians over
# the rounds of the times and of the per-round ratios. restic runs after, best of N.
#
# usage: bench/s3.sh [DATA_DIR]   (default /var/tmp/holdfast-bench; needs DATA_DIR/linux-old,
#                                  fetched by ../shared/bench/fetch-linux-sources.sh)
# Environment: HOLDFAST_BIN (default target/release/holdfast, built if missing),
#   HOLDFAST_BENCH_SHM (default /dev/shm/holdfast-bench-s3, removed at the end),
#   HOLDFAST_BENCH_ROUNDS (default 3: rounds of holdfast, best of N for restic),
#   HOLDFAST_BENCH_RESTIC (default 1),
#   RESTIC_BIN (default restic on PATH, else /opt/holdfast-peers/x/usr/bin/restic),
#   HOLDFAST_BENCH_STORES (default "garage3 garage1").
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
data=${1:-/var/tmp/holdfast-bench}
src=$data/linux-old
shm=${HOLDFAST_BENCH_SHM:-/dev/shm/holdfast-bench-s3}
rounds=${HOLDFAST_BENCH_ROUNDS:-3}
with_restic=${HOLDFAST_BENCH_RESTIC:-1}
stores=${HOLDFAST_BENCH_STORES:-garage3 garage1}
restic=${RESTIC_BIN:-$(command -v restic || echo /opt/holdfast-peers/x/usr/bin/restic)}
cores=$(nproc)
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
for c in $stores; do
  case $c in
  garage3) bash "$root/scripts/garage-cluster.sh" up "$shm/garage3" >/dev/null ;;
  garage1) GARAGE_NODES=1 bash "$root/scripts/garage-cluster.sh" up "$shm/garage1" >/dev/null ;;
  *) echo "unknown store $c (garage3, garage1)" >&2; exit 2 ;;
  esac
done
use_store() { set -a; . "$shm/$1/env"; set +a; export AWS_DEFAULT_REGION=$AWS_REGION; store=$1; }

now() { date +%s.%N; }
# CPU seconds (user + system) all nodes of the current store have used so far.
store_cpu() {
  local t=0 p
  for f in "$shm/$store"/node*/pid; do
    p=$(cat "$f"); t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "scale=2; $t / $(getconf CLK_TCK)" | bc
}
# Lines of the endpoint node's log (every S3 request is one `generic_server` line there).
log_lines() { wc -l <"$shm/$store/node1/log"; }
# The S3 requests logged after line $1: "total GET PUT HEAD LIST other".
requests_since() {
  tail -n +$(($1 + 1)) "$shm/$store/node1/log" | grep 'generic_server.*(key ' | awk '
    { m = $(NF-1); p = $NF; n++
      if (m == "GET" && (p ~ /[?&]list-type=/ || p ~ /^\/[^\/]*\/?(\?.*)?$/)) l++
      else if (m == "GET") g++; else if (m == "PUT") u++; else if (m == "HEAD") h++; else o++ }
    END { printf "%d %d %d %d %d %d\n", n, g, u, h, l, o }'
}
# best-of-N of a command: sets OUT (wall s), OUT_cpu (client user+sys s), OUT_scpu (store CPU
# s), OUT_req ("total GET PUT HEAD LIST other", empty without a store), all from the fastest
# round; each round starts from the state `prep` makes.
best() { # OUT name prep cmd...
  local _out=$1 _name=$2 _prep=$3; shift 3; local _b="" _bc="" _bs="" _br=""
  for _ in $(seq 1 "$rounds"); do
    eval "$_prep"
    local _s0=0 _l0=0; [ -n "${store:-}" ] && { _s0=$(store_cpu); _l0=$(log_lines); }
    local _t0; _t0=$(now)
    eval "/usr/bin/time -f '%U %S' -o '$shm/time.$_name' $*" >"$shm/log.$_name" 2>&1 || { echo "$_name failed:"; tail -20 "$shm/log.$_name"; exit 1; }
    local _t; _t=$(echo "$(now) - $_t0" | bc)
    local _s=0 _r=""
    if [ -n "${store:-}" ]; then _s=$(echo "$(store_cpu) - $_s0" | bc); sleep 0.3; _r=$(requests_since "$_l0"); fi
    local _c; _c=$(awk 'END {print $1 + $2}' "$shm/time.$_name")
    if [ -z "$_b" ] || [ "$(echo "$_t < $_b" | bc)" = 1 ]; then _b=$_t; _bc=$_c; _bs=$_s; _br=$_r; fi
  done
  printf -v "$_out" '%s' "$_b"
  printf -v "${_out}_cpu" '%s' "$_bc"
  printf -v "${_out}_scpu" '%s' "$_bs"
  printf -v "${_out}_req" '%s' "$_br"
}
n=0
fresh_local() { rm -rf "$shm/local"; "$hf" --repo "$shm/local" init >/dev/null; }
fresh_s3() { n=$((n+1)); s3repo="s3://$HOLDFAST_TEST_BUCKET/hf$n"; "$hf" --repo "$s3repo" init >/dev/null; }
fresh_restic() { n=$((n+1)); rrepo="s3:$AWS_ENDPOINT_URL/$HOLDFAST_TEST_BUCKET/restic$n"; "$restic" -r "$rrepo" init >/dev/null; }
clear_out() { rm -rf "$shm/out"; }
same() { diff -r "$src" "$shm/out/linux-old" >/dev/null || { echo "$1 restore differs"; exit 1; }; }
ratio() { printf "%.2f" "$(echo "scale=4; $1 / $2" | bc)"; }
# local wall / (S3 wall - store CPU / cores)
accounted() { printf "%.2f" "$(echo "scale=4; $1 / ($2 - $3 / $cores)" | bc)"; }
per_gb() { echo "scale=0; $1 * 1000000000 / $size" | bc; }

size=$(du -sb "$src" | cut -f1); files=$(find "$src" -type f | wc -l)
echo "data: $src ($files files, $((size/1000000)) MB); $rounds rounds; tmpfs; Garage on loopback; $cores cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
median() { sort -g | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else printf "%.4f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
# holdfast, interleaved: each round runs the local backup and restore, then every store's. One
# line per run in $shm/runs: "round phase store wall client_cpu store_cpu total GET PUT HEAD LIST other".
: >"$shm/runs"
run() { # phase store prep cmd...
  local _ph=$1 _st=$2 _prep=$3; shift 3
  local _saved=$rounds; rounds=1
  best one "$_ph-$_st" "$_prep" "$@"
  rounds=$_saved
  echo "$r $_ph $_st $one $one_cpu $one_scpu ${one_req:-0 0 0 0 0 0}" >>"$shm/runs"
}
for r in $(seq 1 "$rounds"); do
  store=
  run backup local fresh_local '"$hf" --repo "$shm/local" backup "$src"'
  run restore local clear_out '"$hf" --repo "$shm/local" restore latest "$shm/out"'
  same local
  for c in $stores; do
    use_store $c
    run backup $c fresh_s3 '"$hf" --repo "$s3repo" backup "$src"'
    run restore $c clear_out '"$hf" --repo "$s3repo" restore latest "$shm/out"'
    same $c
  done
done
# field F (4 wall, 5 client CPU, 6 store CPU) of phase P and store S, one line per round.
col() { awk -v p="$1" -v s="$2" -v f="$3" '$2 == p && $3 == s {print $f}' "$shm/runs"; }
bl=$(col backup local 4 | median); bl_cpu=$(col backup local 5 | median)
rl=$(col restore local 4 | median); rl_cpu=$(col restore local 5 | median)
rows=()
# A row of the interleaved rounds: medians of wall, CPU, per-round plain and accounted ratios;
# the requests of the last round.
hrow() { # phase store
  local _w _c _s _pr _ar _req
  _w=$(col "$1" "$2" 4 | median); _c=$(col "$1" "$2" 5 | median); _s=$(col "$1" "$2" 6 | median)
  _pr=$(paste <(col "$1" local 4) <(col "$1" "$2" 4) | awk '{print $1 / $2}' | median)
  _ar=$(paste <(col "$1" local 4) <(col "$1" "$2" 4) <(col "$1" "$2" 6) | awk -v c="$cores" '{print $1 / ($2 - $3 / c)}' | median)
  _req=$(awk -v p="$1" -v s="$2" '$2 == p && $3 == s {r = $7 " " $8 " " $9 " " $10 " " $11 " " $12} END {print r}' "$shm/runs")
  local _tt _g _u _h _l _o; read -r _tt _g _u _h _l _o <<<"$_req"
  rows+=("$(printf '| holdfast | %s | %s | %.2f s | %.1f s | %.1f s | %.2f | %.2f | %s (%s GET, %s PUT, %s HEAD, %s LIST, %s other) | %s |' \
    "$1" "$2" "$_w" "$_c" "$_s" "$_pr" "$_ar" "$_tt" "$_g" "$_u" "$_h" "$_l" "$_o" "$(per_gb "$_tt")")")
}
for c in $stores; do
  hrow backup $c
  hrow restore $c
done
row() { # tool phase store local_wall VAR
  local _v=$5 _w _c _s _r; _w=${!_v}; _c=$(eval echo "\${${_v}_cpu}"); _s=$(eval echo "\${${_v}_scpu}"); _r=$(eval echo "\${${_v}_req}")
  local _tt _g _u _h _l _o; read -r _tt _g _u _h _l _o <<<"$_r"
  rows+=("$(printf '| %s | %s | %s | %.2f s | %.1f s | %.1f s | %s | %s | %s (%s GET, %s PUT, %s HEAD, %s LIST, %s other) | %s |' \
    "$1" "$2" "$3" "$_w" "$_c" "$_s" "$(ratio "$4" "$_w")" "$(accounted "$4" "$_w" "$_s")" "$_tt" "$_g" "$_u" "$_h" "$_l" "$_o" "$(per_gb "$_tt")")")
}
if [ "$with_restic" = 1 ] && [ -x "$restic" ]; then
  export RESTIC_CACHE_DIR=$shm/restic-cache
  for c in $stores; do
    use_store $c
    best rb restic-backup-$c 'fresh_restic; rm -rf "$RESTIC_CACHE_DIR"' '"$restic" -r "$rrepo" backup "$src"'
    best rr restic-restore-$c 'clear_out; rm -rf "$RESTIC_CACHE_DIR"' '"$restic" -r "$rrepo" restore latest --target "$shm/out"'
    row "restic $("$restic" version | cut -d' ' -f2)" backup $c "$bl" rb
    row "restic" "restore (cold cache)" $c "$rl" rr
  done
elif [ "$with_restic" = 1 ]; then
  echo "restic not found at $restic (set RESTIC_BIN): skipped"
fi
printf '\nlocal repository (median of %s rounds): backup %.2f s (CPU %.1f s), restore %.2f s (CPU %.1f s)\n' "$rounds" "$bl" "$bl_cpu" "$rl" "$rl_cpu"
printf '\nevery run (round phase store wall client-CPU store-CPU requests GET PUT HEAD LIST other):\n'
cat "$shm/runs"
printf '\n| tool | phase | store | wall | client CPU | store CPU | S3/local | accounted | requests | per GB |\n|---|---|---|---|---|---|---|---|---|---|\n'
printf '%s\n' "${rows[@]}"
