#!/usr/bin/env bash
# One big file on every core: a VM-image-like file (thirds of random bytes, text and zeros, the
# zeros a hole as in a sparse image) backed up by holdfast against the floor, `zstd -3 -T0` of
# the same file, and against restic 0.18, in one run, on tmpfs. Then 1% of the file is
# overwritten in scattered 64 KiB places and both back up again (bytes added to each repository
# reported). Then both restore, against the floor `zstd -dc` to the same tmpfs; each restored
# file is compared with the original, and holdfast's must keep the zeros as holes.
# rustic is not installed on the benchmark machine: it is skipped (said so in the output).
#
# usage: bench/bigfile.sh [SIZE]          SIZE like 8G (default), 512M; also from $SIZE
# Environment: HOLDFAST_BIN (default target/release/holdfast, built if missing), RESTIC_BIN
#   (default: restic 0.18 from ../shared/bench/newest-restic.sh), HOLDFAST_BENCH_SHM (default
#   /dev/shm/holdfast-bench-bigfile, removed at the end unless KEEP=1).
# Results: printed, and written to bench/results/bigfile-<size>-<UTC time>.md.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
size_arg=${1:-${SIZE:-8G}}
bytes=$(numfmt --from=iec "$size_arg")
shm=${HOLDFAST_BENCH_SHM:-/dev/shm/holdfast-bench-bigfile}
hf=${HOLDFAST_BIN:-$root/target/release/holdfast}
case "$shm" in */holdfast-bench*) ;; *) echo "HOLDFAST_BENCH_SHM must contain 'holdfast-bench'" >&2; exit 2 ;; esac
[ -x "$hf" ] || cargo build --release -p holdfast --manifest-path "$root/Cargo.toml"
restic=${RESTIC_BIN:-$(bash "$root/../shared/bench/newest-restic.sh")}
for t in zstd openssl python3 bc; do command -v $t >/dev/null || { echo "needs $t" >&2; exit 2; }; done
echo "NOTE: rustic is not installed here: skipped"
unset HOLDFAST_INSECURE_TEST_KDF HOLDFAST_REPOSITORY
export HOLDFAST_PASSWORD=holdfast-bench-password RESTIC_PASSWORD=holdfast-bench-password
export RESTIC_CACHE_DIR=$shm/cache

rm -rf "$shm"; mkdir -p "$shm/src"
trap '[ -n "${KEEP:-}" ] || rm -rf "$shm"' EXIT
img=$shm/src/disk.img
third=$(( bytes / 3 / 1048576 ))            # MiB per third
# random: AES-CTR of zeros (fast); text: random lines, never a repeated chunk; zeros: a hole
head -c $(( third << 20 )) < <(openssl enc -aes-128-ctr -nosalt -pass pass:holdfast -in /dev/zero 2>/dev/null) > "$img"
python3 - "$img" "$third" <<'PY'
import sys, random
path, third = sys.argv[1], int(sys.argv[2])
rng = random.Random(42)
words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(5000)]
lines = [(b" ".join(rng.choice(words) for _ in range(12)) + b"\n").ljust(64)[:63] + b"\n" for _ in range(65536)]
with open(path, "ab") as f:
    for _ in range(third):
        f.write(b"".join(rng.choices(lines, k=16384)))
    f.truncate(f.tell() + (third << 20))  # the zero third, a hole
PY
size=$(stat -c %s "$img"); dense=$(( 2 * third << 20 ))

now() { date +%s.%N; }
declare -A T
run() { # NAME CMD...
  local name=$1; shift; local t0; t0=$(now)
  "$@" >"$shm/log.$name" 2>&1 || { echo "$name failed:"; tail -20 "$shm/log.$name"; exit 1; }
  T[$name]=$(echo "$(now) - $t0" | bc)
}
same() { cmp -s "$img" "$1" || { echo "FAIL: $1 differs from the original" >&2; exit 1; }; }
repo_bytes() { du -sb "$1" | cut -f1; }

# floors: compress, then decompress to the same tmpfs
run zstd sh -c "zstd -3 -T0 -q -c '$img' > '$shm/img.zst'"
run unzstd sh -c "zstd -dc -q '$shm/img.zst' > '$shm/dec.img'"
rm -f "$shm/img.zst" "$shm/dec.img"

"$hf" init --repo "$shm/hf-repo" >/dev/null
"$restic" -r "$shm/restic-repo" init >/dev/null
run holdfast "$hf" backup --repo "$shm/hf-repo" "$shm/src"
run restic "$restic" -r "$shm/restic-repo" backup -q "$shm/src"
hf1=$(repo_bytes "$shm/hf-repo"); r1=$(repo_bytes "$shm/restic-repo")

# 1% of the file, in scattered 64 KiB writes (in its random and text thirds)
python3 - "$img" "$dense" <<'PY'
import sys, random
path, dense = sys.argv[1], int(sys.argv[2])
rng = random.Random(7)
with open(path, "r+b") as f:
    for _ in range(max(1, (dense * 3 // 2) // 100 // 65536)):
        f.seek(rng.randrange(0, dense - 65536) & ~4095)
        f.write(rng.randbytes(65536))
PY
run holdfast-1pct sh -c "'$hf' --json backup --repo '$shm/hf-repo' '$shm/src' > '$shm/hf-1pct.json'"
hf_read=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["summary"]["bytes_read"])' "$shm/hf-1pct.json" 2>/dev/null || echo "?")
run restic-1pct "$restic" -r "$shm/restic-repo" backup -q "$shm/src"
hf2=$(repo_bytes "$shm/hf-repo"); r2=$(repo_bytes "$shm/restic-repo")

run holdfast-restore "$hf" restore --repo "$shm/hf-repo" latest "$shm/hf-out"
out=$shm/hf-out/src/disk.img
same "$out"
hf_alloc=$(( $(stat -c %b "$out") * $(stat -c %B "$out") ))
holes=kept; [ "$hf_alloc" -le $(( dense + dense / 50 )) ] || holes="NOT KEPT ($hf_alloc bytes allocated for $dense non-zero)"
rm -rf "$shm/hf-out"
run restic-restore "$restic" -r "$shm/restic-repo" restore latest --sparse --target "$shm/r-out"
same "$shm/r-out$shm/src/disk.img"
r_alloc=$(( $(stat -c %b "$shm/r-out$shm/src/disk.img") * 512 ))
rm -rf "$shm/r-out"

mbs() { echo "scale=0; $size / $1 / 1000000" | bc; }
ratio() { echo "scale=2; $1 / $2" | bc; }
mb() { echo "scale=1; $1 / 1000000" | bc; }
results=$here/results/bigfile-$size_arg-$(date -u +%Y%m%dT%H%M%SZ).md
mkdir -p "$here/results"
{
echo "big file: $(numfmt --to=iec "$size") (random, text, zeros thirds; zeros a hole), $(nproc) cores; $("$restic" version | cut -d' ' -f1-2); rustic: not installed, skipped"
printf '%-30s %9s %8s %s\n' phase seconds "MB/s" "floor time / this time (>= 0.9 is the goal)"
printf '%-30s %9.2f %8s\n' "zstd -3 -T0 (floor)" "${T[zstd]}" "$(mbs "${T[zstd]}")"
printf '%-30s %9.2f %8s %s\n' "holdfast initial" "${T[holdfast]}" "$(mbs "${T[holdfast]}")" "$(ratio "${T[zstd]}" "${T[holdfast]}")"
printf '%-30s %9.2f %8s %s\n' "restic initial" "${T[restic]}" "$(mbs "${T[restic]}")" "$(ratio "${T[zstd]}" "${T[restic]}")"
printf '%-30s %9.2f %8s %s\n' "holdfast after 1% changed" "${T[holdfast-1pct]}" "$(mbs "${T[holdfast-1pct]}")" "$(ratio "${T[zstd]}" "${T[holdfast-1pct]}")"
printf '%-30s %9.2f %8s %s\n' "restic after 1% changed" "${T[restic-1pct]}" "$(mbs "${T[restic-1pct]}")" "$(ratio "${T[zstd]}" "${T[restic-1pct]}")"
printf '%-30s %9.2f %8s\n' "zstd -dc (floor)" "${T[unzstd]}" "$(mbs "${T[unzstd]}")"
printf '%-30s %9.2f %8s %s\n' "holdfast restore" "${T[holdfast-restore]}" "$(mbs "${T[holdfast-restore]}")" "$(ratio "${T[unzstd]}" "${T[holdfast-restore]}")"
printf '%-30s %9.2f %8s %s\n' "restic restore --sparse" "${T[restic-restore]}" "$(mbs "${T[restic-restore]}")" "$(ratio "${T[unzstd]}" "${T[restic-restore]}")"
echo "repository MB after initial / added by the 1% backup: holdfast $(mb "$hf1") / $(mb $((hf2 - hf1))), restic $(mb "$r1") / $(mb $((r2 - r1)))"
echo "holdfast 1% backup read $hf_read bytes of $size (once = $size)"
echo "restored files identical: yes; holdfast holes: $holes (allocated $(mb "$hf_alloc") MB); restic allocated $(mb "$r_alloc") MB"
} | tee "$results"
