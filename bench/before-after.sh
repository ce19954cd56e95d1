#!/usr/bin/env bash
# Regression check: two holdfast builds side by side on the Linux kernel sources, same data,
# same run, alternating rounds. Repositories and restores on tmpfs.
# usage: bench/before-after.sh BEFORE_BINARY AFTER_BINARY [ROUNDS]
#   e.g. git worktree add /tmp/old 438b392 && (cd /tmp/old && cargo build --release -p holdfast)
#        cargo build --release -p holdfast
#        bench/before-after.sh /tmp/old/target/release/holdfast target/release/holdfast
set -euo pipefail
before=$1 after=$2 rounds=${3:-2}
S=${HOLDFAST_BENCH_DIR:-/dev/shm/holdfast-before-after}
mkdir -p "$S"
read -r old new < <(bash "$(dirname "$0")/../../shared/bench/fetch-linux-sources.sh" "$S" 2>/dev/null | xargs) ||
  { old=$S/linux-old; new=$S/linux-new; }
export HOLDFAST_PASSWORD=bench
t() { local s e rc=0; s=$(date +%s.%N); "$@" >/dev/null 2>&1 || rc=$?; e=$(date +%s.%N)
      printf "%.2f" "$(echo "$e - $s" | bc)"; [ "$rc" -le 3 ] || printf "(rc=%d)" "$rc"; }
for round in $(seq 1 "$rounds"); do
  for v in before after; do
    bin=$([ $v = before ] && echo "$before" || echo "$after")
    r=$S/repo-$v; rm -rf "$r" "$S/restore-$v"
    "$bin" --repo "$r" init >/dev/null 2>&1
    b1=$(t "$bin" --repo "$r" backup "$old")
    b2=$(t "$bin" --repo "$r" backup "$new")
    b3=$(t "$bin" --repo "$r" backup "$new")
    rs=$(t "$bin" --repo "$r" restore latest "$S/restore-$v")
    ck=$(t "$bin" --repo "$r" check)
    echo "round $round $v: initial $b1 s, incremental $b2 s, unchanged $b3 s, restore $rs s, check $ck s, repo $(du -sm "$r" | cut -f1) MB"
    rm -rf "$S/restore-$v" "$r"
  done
done
