#!/usr/bin/env bash
# A volume (disk image) as a data source: holdfast's `kind = "volume"` against the floor,
# `dd | zstd -3 -T0` of the same image, and against restic 0.18 backing up the same image with
# `restic backup --stdin`, in one run, on tmpfs. The image (SIZE MiB, default 2048) is thirds of
# random bytes, text and zeros written out, plus as much again of holes (a sparse tail). Then
# 1% of the image is overwritten in scattered 64 KiB places and both tools back up again.
# Reports wall seconds, MB/s of the image's allocated bytes, ratios against holdfast, and what
# each repository holds.
#
# usage: bench/volume.sh [SIZE_MIB]
# Environment: HOLDFAST_BIN (default target/release/holdfast, built if missing), RESTIC_BIN
#   (default: restic 0.18 from ../shared/bench/newest-restic.sh), HOLDFAST_BENCH_SHM (default
#   /dev/shm/holdfast-bench-volume, removed at the end).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
mib=${1:-2048}
shm=${HOLDFAST_BENCH_SHM:-/dev/shm/holdfast-bench-volume}
hf=${HOLDFAST_BIN:-$root/target/release/holdfast}
case "$shm" in */holdfast-bench*) ;; *) echo "HOLDFAST_BENCH_SHM must contain 'holdfast-bench'" >&2; exit 2 ;; esac
[ -x "$hf" ] || cargo build --release -p holdfast --manifest-path "$root/Cargo.toml"
restic=${RESTIC_BIN:-$(bash "$root/../shared/bench/newest-restic.sh")}
unset HOLDFAST_INSECURE_TEST_KDF HOLDFAST_REPOSITORY
export HOLDFAST_PASSWORD=holdfast-bench-password RESTIC_PASSWORD=holdfast-bench-password
export RESTIC_CACHE_DIR=$shm/cache

rm -rf "$shm"; mkdir -p "$shm"
trap '[ -n "${KEEP:-}" ] || rm -rf "$shm"' EXIT
img=$shm/disk.img
third=$((mib / 3))
python3 - "$img" "$third" <<'PY'
import os, sys, random
path, third = sys.argv[1], int(sys.argv[2])
mb = 1 << 20
rng = random.Random(42)
words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(5000)]
with open(path, "wb") as f:
    for _ in range(third):
        f.write(rng.randbytes(mb))
    for _ in range(third):
        line = b" ".join(rng.choice(words) for _ in range(mb // 6))
        f.write((line + b"\n" * mb)[:mb])
    zero = bytes(mb)
    for _ in range(third):
        f.write(zero)
    f.truncate(f.tell() * 2)  # a sparse tail as large again
PY
used=$((third * 3))

now() { date +%s.%N; }
declare -A T
run() { # NAME CMD...
  local name=$1; shift; local t0; t0=$(now)
  "$@" >"$shm/log.$name" 2>&1 || { echo "$name failed:"; tail -20 "$shm/log.$name"; exit 1; }
  T[$name]=$(echo "$(now) - $t0" | bc)
}

cat >"$shm/holdfast.toml" <<TOML
[repository.local]
url = "$shm/hf-repo"
password-env = "HOLDFAST_PASSWORD"

[class.standard]
rpo = "30m"
rto = "1h"
keep = { last = 10 }

[[source]]
name = "disk"
kind = "volume"
class = "standard"
strategy = "backup"
path = "$img"
TOML
export HOLDFAST_CONFIG=$shm/holdfast.toml HOLDFAST_STATE_DIR=$shm/state
"$hf" init --repo "$shm/hf-repo" >/dev/null
"$restic" -r "$shm/restic-repo" init >/dev/null

# protect's exit code is the workload's status (red until a drill ran): the job's state counts
protect() { HOLDFAST_NOW=$1 "$hf" --json protect --source disk >"$shm/protect.json" || true; grep -q '"state": *"completed"' "$shm/protect.json"; }

run floor sh -c "dd if='$img' bs=1M status=none | zstd -3 -T0 -q -c > /dev/null"
run holdfast protect "$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)"
run restic "$restic" -r "$shm/restic-repo" backup --stdin --stdin-filename disk.img -q < "$img"
hf_size1=$(du -sm "$shm/hf-repo" | cut -f1); r_size1=$(du -sm "$shm/restic-repo" | cut -f1)

# 1% of the allocated bytes, in scattered 64 KiB writes
python3 - "$img" "$used" <<'PY'
import os, sys, random
path, used = sys.argv[1], int(sys.argv[2]) << 20
rng = random.Random(7)
n = used // 100 // 65536
with open(path, "r+b") as f:
    for _ in range(n):
        f.seek(rng.randrange(0, used - 65536) & ~4095)
        f.write(rng.randbytes(65536))
PY
run holdfast-1pct protect "$(date -u -d '+2 hour' +%Y-%m-%dT%H:%M:%SZ)"
run restic-1pct "$restic" -r "$shm/restic-repo" backup --stdin --stdin-filename disk.img -q < "$img"
hf_size2=$(du -sm "$shm/hf-repo" | cut -f1); r_size2=$(du -sm "$shm/restic-repo" | cut -f1)

mbs() { echo "scale=0; $used / $1" | bc; }
ratio() { echo "scale=2; $1 / $2" | bc; }
echo "volume source: ${mib} MiB written (random, text, zeros thirds) + as much of holes; $("$restic" version | cut -d' ' -f1-2)"
printf '%-28s %9s %8s %s\n' phase seconds "MB/s" "time vs holdfast"
printf '%-28s %9.2f %8s %s\n' "dd | zstd -3 -T0 (floor)" "${T[floor]}" "$(mbs "${T[floor]}")" "$(ratio "${T[floor]}" "${T[holdfast]}")"
printf '%-28s %9.2f %8s %s\n' "holdfast initial" "${T[holdfast]}" "$(mbs "${T[holdfast]}")" "1.00"
printf '%-28s %9.2f %8s %s\n' "restic --stdin initial" "${T[restic]}" "$(mbs "${T[restic]}")" "$(ratio "${T[restic]}" "${T[holdfast]}")"
printf '%-28s %9.2f %8s %s\n' "holdfast after 1% changed" "${T[holdfast-1pct]}" "$(mbs "${T[holdfast-1pct]}")" "1.00"
printf '%-28s %9.2f %8s %s\n' "restic after 1% changed" "${T[restic-1pct]}" "$(mbs "${T[restic-1pct]}")" "$(ratio "${T[restic-1pct]}" "${T[holdfast-1pct]}")"
echo "repository MB after initial / after 1%: holdfast $hf_size1 / $hf_size2, restic $r_size1 / $r_size2"
