#!/usr/bin/env bash
# holdfast benchmark: many small files (issue 15, "millions of files in bounded memory").
#
# usage: bench/manyfiles.sh [N]            (default N: 250000)
#
# Generates N files of 100 bytes each (distinct content) in N/200 directories on tmpfs, then
# measures holdfast's initial backup, no-change backup and restore (wall time and peak RSS via
# /usr/bin/time), the repository size, `tar cf - | zstd -3 -T0 | wc -c` of the tree as the size
# floor, and restic 0.18 and rustic on the same data (rustic from PATH or /opt/holdfast-peers/rustic/bin;
# skipped, loudly, when it is not installed).
#
# Environment knobs (all optional):
#   HOLDFAST_BIN            holdfast binary; default target/release/holdfast (CARGO_TARGET_DIR honoured)
#   HOLDFAST_BENCH_SHM      scratch dir on tmpfs; default /dev/shm/holdfast-bench-manyfiles (removed at the end)
#   HOLDFAST_BENCH_TOOLS    default "holdfast restic rustic"
#   HOLDFAST_BENCH_KEEP     1: keep the scratch dir
#   RESTIC_BIN              default: ../shared/bench/newest-restic.sh's binary, else `restic` on PATH
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
n=${1:-250000}
shm=${HOLDFAST_BENCH_SHM:-/dev/shm/holdfast-bench-manyfiles}
tools_wanted=${HOLDFAST_BENCH_TOOLS:-"holdfast restic rustic"}
hf=${HOLDFAST_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/holdfast}

case "$shm" in */holdfast-bench*) ;; *) echo "HOLDFAST_BENCH_SHM must contain 'holdfast-bench' (it is removed at the end)" >&2; exit 2 ;; esac
say() { printf '%s\n' "$*" >&2; }

for c in tar zstd awk du; do command -v "$c" >/dev/null || { say "missing $c"; exit 1; }; done
[ -x /usr/bin/time ] || { say "missing /usr/bin/time (apt-get install -y time)"; exit 1; }
[ -x "$hf" ] || { say "no holdfast binary at $hf: cargo build --release -p holdfast"; exit 1; }

unset HOLDFAST_INSECURE_TEST_KDF HOLDFAST_REPOSITORY RESTIC_REPOSITORY || true
export HOLDFAST_PASSWORD=holdfast-bench-password RESTIC_PASSWORD=holdfast-bench-password
export RUSTIC_PASSWORD=holdfast-bench-password
export RESTIC_CACHE_DIR=$shm/cache/restic RUSTIC_CACHE_DIR=$shm/cache/rustic
[ -x /opt/holdfast-peers/rustic/bin/rustic ] && export PATH="$PATH:/opt/holdfast-peers/rustic/bin"

restic_bin=${RESTIC_BIN:-}
if [ -z "$restic_bin" ]; then
  if [ -x /opt/holdfast-peers/x/usr/bin/restic ]; then restic_bin=/opt/holdfast-peers/x/usr/bin/restic
  elif [ -x "$root/../shared/bench/newest-restic.sh" ]; then restic_bin=$("$root/../shared/bench/newest-restic.sh" 2>/dev/null || true)
  fi
  [ -n "$restic_bin" ] || restic_bin=$(command -v restic || true)
fi
tools=()
for t in $tools_wanted; do
  case $t in
    holdfast) tools+=(holdfast) ;;
    restic) if [ -n "$restic_bin" ] && [ -x "$restic_bin" ]; then tools+=(restic); else say "SKIPPING restic: not found (../shared/bench/newest-restic.sh installs it)"; fi ;;
    rustic) if command -v rustic >/dev/null; then tools+=(rustic); else say "SKIPPING rustic: not installed"; fi ;;
    *) say "unknown tool $t"; exit 2 ;;
  esac
done

rm -rf "$shm"; mkdir -p "$shm"
# The source and one restore at a time: 2N files, plus the repositories. A tmpfs has a fixed
# number of inodes (about 3M on a 24 GiB machine), and running out shows as ENOSPC file by file.
need_inodes=$(( 2 * n + 2 * n / 200 + 100000 ))
have_inodes=$(df --output=iavail "$shm" | tail -1 | tr -d ' ')
if [ "$have_inodes" -lt "$need_inodes" ]; then
  say "$shm has $have_inodes free inodes, this run needs about $need_inodes (source and restore)."
  say "Give the tmpfs more, e.g.: mount -o remount,nr_inodes=$(( need_inodes * 2 )) $(df --output=target "$shm" | tail -1)"
  exit 2
fi
trap '[ "${HOLDFAST_BENCH_KEEP:-0}" = 1 ] || rm -rf "$shm"' EXIT
src=$shm/src
dirs=$(( (n + 199) / 200 ))
say "generating $n files of 100 bytes in $dirs directories under $src"
mkdir -p "$src"
# Distinct content per file: its number, padded to 100 bytes.
awk -v n="$n" -v src="$src" 'BEGIN {
  pad = sprintf("%100s", ""); gsub(/ /, "x", pad)
  for (i = 0; i < n; i++) {
    d = int(i / 200)
    if (i % 200 == 0) { dir = sprintf("%s/d%05d", src, d); system("mkdir -p " dir) }
    f = sprintf("%s/f%03d", dir, i % 200)
    s = sprintf("file %d ", i); s = s substr(pad, 1, 100 - length(s))
    printf "%s", s > f; close(f)
  }
}'

tarzstd=$(tar cf - -C "$shm" src | zstd -3 -T0 -q | wc -c)
say "tar | zstd -3: $tarzstd bytes"
# The same floor with the metadata a backup keeps: pax headers carry nanosecond mtime, atime and
# ctime (plain tar keeps a whole-second mtime only, which change detection cannot use).
paxzstd=$(tar --format=posix -cf - -C "$shm" src | zstd -3 -T0 -q | wc -c)
say "tar --format=posix | zstd -3: $paxzstd bytes"

# measure LABEL CMD...: appends "LABEL seconds kb" to $shm/results
measure() {
  local label=$1; shift
  /usr/bin/time -f '%e %M' -o "$shm/t" "$@" >"$shm/log.$label" 2>&1 || { say "$label FAILED:"; tail -20 "$shm/log.$label" >&2; exit 1; }
  read -r s kb <"$shm/t"
  echo "$label $s $kb" >>"$shm/results"
  say "$label: $s s, $((kb / 1024)) MB peak"
}

: >"$shm/results"
for t in "${tools[@]}"; do
  repo=$shm/repo-$t; out=$shm/restore-$t
  case $t in
    holdfast)
      "$hf" init --repo "$repo" >/dev/null
      measure "$t-initial" "$hf" backup --repo "$repo" "$src"
      measure "$t-nochange" "$hf" backup --repo "$repo" "$src"
      measure "$t-restore" "$hf" restore --repo "$repo" latest "$out" ;;
    restic)
      "$restic_bin" -r "$repo" init >/dev/null
      measure "$t-initial" "$restic_bin" -r "$repo" backup "$src"
      measure "$t-nochange" "$restic_bin" -r "$repo" backup "$src"
      measure "$t-restore" "$restic_bin" -r "$repo" restore latest --target "$out" ;;
    rustic)
      rustic -r "$repo" init >/dev/null
      measure "$t-initial" rustic -r "$repo" backup "$src"
      measure "$t-nochange" rustic -r "$repo" backup "$src"
      measure "$t-restore" rustic -r "$repo" restore latest "$out" ;;
  esac
  restored=$(find "$out" -type f | wc -l)
  [ "$restored" = "$n" ] || { say "$t restored $restored files, expected $n"; exit 1; }
  echo "$t-size $(du -sb "$repo" | awk '{print $1}')" >>"$shm/results"
  rm -rf "$out"
done

get() { awk -v k="$1" -v c="$2" '$1 == k { print $c }' "$shm/results"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "-"; else printf "%.2fx", a / b }'; }
printf '\n%s files of 100 B in %s directories (tmpfs), holdfast %s\n\n' "$n" "$dirs" "$("$hf" --version | awk '{print $NF}')"
printf '| phase |'; printf ' %s |' "${tools[@]}"
printf ' holdfast / restic |\n|---|'; for _ in "${tools[@]}"; do printf -- '---|'; done; printf -- '---|\n'
for p in initial nochange restore; do
  printf '| %s |' "$p"
  for t in "${tools[@]}"; do printf ' %s s, %s MB |' "$(get "$t-$p" 2)" "$(( $(get "$t-$p" 3) / 1024 ))"; done
  printf ' time %s, memory %s |\n' "$(ratio "$(get holdfast-$p 2)" "$(get restic-$p 2)")" "$(ratio "$(get holdfast-$p 3)" "$(get restic-$p 3)")"
done
printf '| repository |'
for t in "${tools[@]}"; do printf ' %s MB |' "$(awk -v b="$(get "$t-size" 2)" 'BEGIN { printf "%.1f", b / 1e6 }')"; done
printf ' %s |\n' "$(ratio "$(get holdfast-size 2)" "$(get restic-size 2)")"
printf '\ntar | zstd -3: %s MB; holdfast repository / tar|zstd: %s (goal <= 1.2x)\n' \
  "$(awk -v b="$tarzstd" 'BEGIN { printf "%.1f", b / 1e6 }')" "$(ratio "$(get holdfast-size 2)" "$tarzstd")"
printf 'tar --format=posix | zstd -3 (nanosecond times, as a backup keeps them): %s MB; holdfast repository / it: %s\n' \
  "$(awk -v b="$paxzstd" 'BEGIN { printf "%.1f", b / 1e6 }')" "$(ratio "$(get holdfast-size 2)" "$paxzstd")"
