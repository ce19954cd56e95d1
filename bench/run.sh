#!/usr/bin/env bash
# holdfast benchmark: holdfast vs restic vs rustic (vs borg) on two Linux kernel source trees, everything on tmpfs.
#
# usage: bench/run.sh [DATA_DIR]          (default DATA_DIR: /var/tmp/holdfast-bench)
#
# DATA_DIR must hold linux-old/ and linux-new/ as made by ../shared/bench/fetch-linux-sources.sh; if it does not,
# that script is run to fetch them (about a minute). See docs/BENCHMARKS.md for what is measured and why.
#
# Environment knobs (all optional):
#   HOLDFAST_BENCH_TOOLS    tools to run, default "holdfast restic rustic borg" (missing ones are skipped, loudly)
#   HOLDFAST_BENCH_ROUNDS   rounds of holdfast's phases (and of the floors), best wall time is reported; default 2
#   HOLDFAST_BENCH_PEER_ROUNDS  rounds of each peer tool's phases; default 1
#   HOLDFAST_BIN            holdfast binary; default target/release/holdfast (built with cargo if missing)
#   HOLDFAST_BENCH_REV      what HOLDFAST_BIN was built from (free text, e.g. a commit id), shown in the report
#   HOLDFAST_BENCH_BUILD    1: run cargo build --release -p holdfast first even if the binary exists
#   HOLDFAST_BENCH_SHM      scratch dir on tmpfs; default /dev/shm/holdfast-bench (removed at the end)
#   HOLDFAST_BENCH_LOGS     where per-phase logs go; default /var/tmp/holdfast-bench-logs/<timestamp>
#   HOLDFAST_BENCH_VERIFY   1 (default): diff every restore against the source (not timed); 0: skip
#   HOLDFAST_BENCH_KEEP     1: keep the tmpfs scratch dir at the end
#   HOLDFAST_BENCH_RESTIC   restic binary; default the first restic on PATH (e.g. a newer restic than the
#                           distribution's: HOLDFAST_BENCH_RESTIC=/opt/holdfast-peers/x/usr/bin/restic)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
data=${1:-/var/tmp/holdfast-bench}
shm=${HOLDFAST_BENCH_SHM:-/dev/shm/holdfast-bench}
tools_wanted=${HOLDFAST_BENCH_TOOLS:-"holdfast restic rustic borg"}
hf_rounds=${HOLDFAST_BENCH_ROUNDS:-2}
peer_rounds=${HOLDFAST_BENCH_PEER_ROUNDS:-1}
verify=${HOLDFAST_BENCH_VERIFY:-1}
logs=${HOLDFAST_BENCH_LOGS:-/var/tmp/holdfast-bench-logs/$(date +%Y%m%d-%H%M%S)}
results=$here/results
hf=${HOLDFAST_BIN:-$root/target/release/holdfast}

case "$shm" in */holdfast-bench*) ;; *) echo "HOLDFAST_BENCH_SHM must contain 'holdfast-bench' (it is removed at the end)" >&2; exit 2 ;; esac

say() { printf '%s\n' "$*" >&2; }
hr() { say "------------------------------------------------------------------------"; }

# ---------------------------------------------------------------- prerequisites
missing=()
[ -x /usr/bin/time ] || missing+=("time")
for c in rsync zstd tar find du diff awk; do command -v "$c" >/dev/null || missing+=("$c"); done
if [ ${#missing[@]} -gt 0 ]; then
  say "missing required tools: ${missing[*]}"
  say "install them with:  apt-get update && apt-get install -y ${missing[*]/diff/diffutils}"
  exit 1
fi

# the benchmark measures the real key derivation, never the test shortcut
unset HOLDFAST_INSECURE_TEST_KDF HOLDFAST_REPOSITORY RESTIC_REPOSITORY RUSTIC_REPOSITORY BORG_REPO || true
export HOLDFAST_PASSWORD=holdfast-bench-password
[ -x /opt/holdfast-peers/rustic/bin/rustic ] && export PATH="$PATH:/opt/holdfast-peers/rustic/bin"
export RESTIC_PASSWORD=$HOLDFAST_PASSWORD RUSTIC_PASSWORD=$HOLDFAST_PASSWORD BORG_PASSPHRASE=$HOLDFAST_PASSWORD
export RESTIC_CACHE_DIR=$shm/cache/restic RUSTIC_CACHE_DIR=$shm/cache/rustic BORG_BASE_DIR=$shm/cache/borg
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes

restic_bin=${HOLDFAST_BENCH_RESTIC:-$(command -v restic || true)}
rustic_bin=$(command -v rustic || true)
[ -n "$rustic_bin" ] || { [ -x "$HOME/.cargo/bin/rustic" ] && rustic_bin=$HOME/.cargo/bin/rustic; } || true

tools=()
skipped=()
for t in $tools_wanted; do
  case $t in
    holdfast)
      if [ ! -x "$hf" ] || [ "${HOLDFAST_BENCH_BUILD:-0}" = 1 ]; then
        say "building holdfast (cargo build --release -p holdfast)"
        (cd "$root" && cargo build --release -p holdfast) >&2
      elif [ -z "${HOLDFAST_BIN:-}" ] && [ -n "$(find "$root/crates" -name '*.rs' -newer "$hf" -print -quit 2>/dev/null)" ]; then
        say "NOTE: $hf is older than some sources under crates/; HOLDFAST_BENCH_BUILD=1 rebuilds it first"
      fi
      tools+=(holdfast) ;;
    restic)
      if [ -n "$restic_bin" ] && [ -x "$restic_bin" ]; then tools+=(restic); else
        say "SKIPPING restic: not installed (install: apt-get update && apt-get install -y restic)"; skipped+=("restic (not installed)"); fi ;;
    rustic)
      if [ -n "$rustic_bin" ]; then tools+=(rustic); else
        say "SKIPPING rustic: not installed (install: nice -n 19 cargo install rustic-rs --locked; takes 15+ minutes on 2 cores)"
        skipped+=("rustic (not installed)"); fi ;;
    borg)
      if command -v borg >/dev/null; then tools+=(borg); else
        say "SKIPPING borg: not installed (optional; install: apt-get install -y borgbackup)"; skipped+=("borg (not installed)"); fi ;;
    *) say "unknown tool $t (known: holdfast restic rustic borg)"; exit 2 ;;
  esac
done

# ---------------------------------------------------------------- data
if [ ! -d "$data/linux-old" ] || [ ! -d "$data/linux-new" ]; then
  fetch=$root/../shared/bench/fetch-linux-sources.sh
  [ -f "$fetch" ] || { say "no $data/linux-{old,new} and no $fetch to fetch them"; exit 1; }
  say "fetching the Linux sources into $data (about a minute)"
  bash "$fetch" "$data" >&2
fi
v_old=$(cat "$data/linux-old.version" 2>/dev/null || echo "?")
v_new=$(cat "$data/linux-new.version" 2>/dev/null || echo "?")

mkdir -p "$logs" "$results"
raw=$logs/raw.tsv
: >"$raw"

cleanup() {
  if [ "${HOLDFAST_BENCH_KEEP:-0}" = 1 ]; then say "kept $shm"; else rm -rf "$shm"; fi
}
trap cleanup EXIT
rm -rf "$shm"
mkdir -p "$shm/src" "$shm/cache"

pristine_old=$shm/old        # linux-old, never touched
pristine_new=$shm/new        # linux-new, never touched
src=$shm/src/linux           # the tree every tool backs up, always this path
restore_dir=$shm/restore     # restore / unpack target, created empty per phase

# run a private copy of the binary: others may rebuild target/release while the benchmark runs
mkdir -p "$shm/bin"
cp "$hf" "$shm/bin/holdfast"
hf_built=$(date -u -r "$hf" '+%Y-%m-%d %H:%M UTC')
hf_orig=$hf
if [ -n "${HOLDFAST_BENCH_REV:-}" ]; then hf_rev=$HOLDFAST_BENCH_REV
elif [ -z "${HOLDFAST_BIN:-}" ]; then
  hf_rev="this checkout, HEAD $(cd "$root" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$root" && [ -n "$(git status --porcelain -- crates Cargo.toml Cargo.lock 2>/dev/null)" ] && echo ' with uncommitted changes')"
else hf_rev="unknown (set HOLDFAST_BENCH_REV to describe it)"; fi
hf=$shm/bin/holdfast

say "copying the trees to tmpfs ($shm)"
cp -a "$data/linux-old" "$pristine_old"
cp -a "$data/linux-new" "$pristine_new"

tree_files=$(find "$pristine_old" -type f | wc -l)
tree_bytes=$(du -sb "$pristine_old" | cut -f1)

# The source goes back to exactly linux-old (content and mtimes, fresh inodes) before every round.
reset_source() {
  rm -rf "$src"
  cp -a "$pristine_old" "$src"
}

# Overlay linux-new as a checkout would: only files whose content changed are rewritten (rsync -c compares
# checksums; no -t, so unchanged files keep their inode, mtime and ctime), files gone in linux-new are deleted.
# Then everything rsync wrote (files, symlinks, and the directories whose entries changed) gets the mtime it has in
# linux-new, so the overlay is identical in every round whatever the clock says. Prints how many paths changed.
overlay_new() {
  local stamp=$shm/overlay.stamp list=$logs/overlay.$1.list
  touch "$stamp"
  sleep 0.01
  rsync -rlpc --delete --out-format='%i %n' "$pristine_new/" "$src/" >"$list"
  (cd "$src" && find . -newer "$stamp" -print0 | while IFS= read -r -d '' p; do
     touch -h -r "$pristine_new/$p" "$p"; done)
  rm -f "$stamp"
  echo "$(grep -c '^>f' "$list" || true) files written, $(grep -c '^\*deleting' "$list" || true) deleted"
}

# measure TOOL PHASE REPO -- command...   runs the command under /usr/bin/time, appends a row to raw.tsv
measure() {
  local tool=$1 phase=$2 repo=$3; shift 4
  local tf=$logs/$tool.$phase.time log=$logs/$tool.$phase.log
  local rc=0
  /usr/bin/time -f '%e %M' -o "$tf" "$@" >"$log" 2>&1 || rc=$?
  local wall rss size=
  read -r wall rss < <(tail -n 1 "$tf")
  [ -n "$repo" ] && [ -e "$repo" ] && size=$(du -sb "$repo" | cut -f1)
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "${tool%%#*}" "$phase" "$wall" "$rss" "$size" "$rc" >>"$raw"
  say "  $(printf '%-10s %-15s %8ss %8s MB  repo %s' "$tool" "$phase" "$wall" "$((rss / 1024))" \
    "$([ -n "$size" ] && echo "$((size / 1024 / 1024)) MB" || echo -)")$([ $rc -ne 0 ] && echo "  EXIT $rc (see $log)")"
  if [ $rc -ne 0 ]; then tail -n 5 "$log" >&2; fi
  return $rc
}

tool_version() {
  case $1 in
    holdfast) echo "holdfast $("$hf" --version | awk '{print $NF}') (binary $hf_orig built $hf_built; source: $hf_rev)" ;;
    restic) "$restic_bin" version | head -n 1 ;;
    rustic) "$rustic_bin" --version | head -n 1 ;;
    borg) borg --version ;;
  esac
}

do_init() {  # tool repo
  case $1 in
    holdfast) "$hf" init --repo "$2" ;;
    restic) "$restic_bin" -r "$2" init ;;
    rustic) "$rustic_bin" -r "$2" init ;;
    borg) borg init -e repokey "$2" ;;
  esac
}

backup_cmd() {  # tool repo n -> CMD
  case $1 in
    holdfast) CMD=("$hf" backup --repo "$2" "$src") ;;
    restic) CMD=("$restic_bin" -r "$2" backup "$src") ;;
    rustic) CMD=("$rustic_bin" -r "$2" --no-progress backup "$src") ;;
    borg) CMD=(borg create "$2::b$3" "$src") ;;
  esac
}

restore_cmd() {  # tool repo target -> CMD
  case $1 in
    holdfast) CMD=("$hf" restore --repo "$2" latest "$3") ;;
    restic) CMD=("$restic_bin" -r "$2" restore latest --target "$3") ;;
    rustic) CMD=("$rustic_bin" -r "$2" --no-progress restore latest "$3") ;;
    borg) CMD=(sh -c 'cd "$1" && exec borg extract "$2::b3"' sh "$3" "$2") ;;
  esac
}

# where the restored copy of $src ended up (holdfast: TARGET/linux; restic, borg: TARGET/<full path>)
restored_tree() {
  local t=$1
  if [ -d "$t/linux" ]; then echo "$t/linux"; elif [ -d "$t$src" ]; then echo "$t$src"; else echo "$t"; fi
}

overlay_summaries=()

# one round: fresh repository, the four phases, then the repository and restore are removed
round() {  # tool label
  local tool=$1 label=$2 repo=$shm/repo-$1
  say "[$label] resetting the source to linux-old"
  reset_source
  rm -rf "$repo" "$restore_dir" "$shm/cache"
  mkdir -p "$shm/cache"
  do_init "$tool" "$repo" >"$logs/$label.init.log" 2>&1 || { say "[$label] init failed:"; tail -n 5 "$logs/$label.init.log" >&2; return 1; }
  backup_cmd "$tool" "$repo" 1
  measure "$label" 1-initial "$repo" -- "${CMD[@]}" || return 1
  local ov
  ov=$(overlay_new "$label")
  say "  overlay linux-new: $ov"
  overlay_summaries+=("$label: $ov")
  backup_cmd "$tool" "$repo" 2
  measure "$label" 2-incremental "$repo" -- "${CMD[@]}" || return 1
  backup_cmd "$tool" "$repo" 3
  measure "$label" 3-no-change "$repo" -- "${CMD[@]}" || return 1
  mkdir -p "$restore_dir"
  restore_cmd "$tool" "$repo" "$restore_dir"
  measure "$label" 4-restore "$repo" -- "${CMD[@]}" || return 1
  if [ "$verify" = 1 ]; then
    local got
    got=$(restored_tree "$restore_dir")
    if diff -r --no-dereference -q "$src" "$got" >"$logs/$label.verify.log" 2>&1; then
      say "  restore verified: identical to the source"
    else
      say "  RESTORE DIFFERS from the source ($(wc -l <"$logs/$label.verify.log") differences, see $logs/$label.verify.log)"
      return 1
    fi
  fi
  rm -rf "$repo" "$restore_dir" "$shm/cache"
}

floors() {  # label
  local label=$1 f=$shm/floor.tar.zst
  reset_source
  rm -f "$f"; rm -rf "$restore_dir"
  measure "$label" "tar+zstd-3" "$f" -- sh -c 'tar cf - -C "$1" linux | zstd -q -3 -T0 > "$2"' sh "$shm/src" "$f"
  measure "$label" "find-walk" "" -- find "$src" -fprint /dev/null
  # the same walk with an lstat of every entry (what a no-change backup must do at least)
  measure "$label" "find-stat-walk" "" -- find "$src" -fprintf /dev/null '%s %T@ %C@ %i\n'
  mkdir -p "$restore_dir"
  measure "$label" "unpack" "" -- sh -c 'zstd -q -dc "$1" | tar xf - -C "$2"' sh "$f" "$restore_dir"
  rm -rf "$restore_dir" "$f"
}

# ---------------------------------------------------------------- run
hr
say "holdfast benchmark: linux-old $v_old -> linux-new $v_new, $tree_files files, $((tree_bytes / 1024 / 1024)) MB"
say "tools: ${tools[*]}   holdfast rounds: $hf_rounds   peer rounds: $peer_rounds   logs: $logs"
[ ${#skipped[@]} -eq 0 ] || say "SKIPPED: ${skipped[*]}"
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
hr

failed=()
# interleave: holdfast round 1, floors, the peers, then further holdfast/floor rounds (spreads machine noise)
for ((r = 1; r <= hf_rounds || r <= peer_rounds; r++)); do
  if ((r <= hf_rounds)); then
    say "== floors, round $r"; floors "floor#$r"
  fi
  for t in "${tools[@]}"; do
    if [ "$t" = holdfast ]; then ((r <= hf_rounds)) || continue; else ((r <= peer_rounds)) || continue; fi
    say "== $t, round $r"
    round "$t" "$t#$r" || { say "!! $t round $r failed"; failed+=("$t#$r"); }
  done
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
# best (lowest) wall time per tool+phase over successful runs; peak RSS is the highest seen over all runs
summary=$logs/summary.tsv
awk -F'\t' '$6 == 0 {
    k = $1 "\t" $2
    if (!(k in w) || $3 < w[k]) { w[k] = $3 }
    if ($4 > m[k]) m[k] = $4
    if ($5 != "") s[k] = $5
    n[k]++
    if (!(k in order)) { order[k] = ++cnt; keys[cnt] = k }
  }
  END { for (i = 1; i <= cnt; i++) { k = keys[i]; printf "%s\t%s\t%s\t%s\t%d\n", k, w[k], m[k], (k in s ? s[k] : ""), n[k] } }' "$raw" >"$summary"

get() {  # tool phase field(3=wall 4=rss_kb 5=bytes)
  awk -F'\t' -v t="$1" -v p="$2" -v f="$3" '$1 == t && $2 == p { print $f }' "$summary"
}
x() { [ "$1" = n/a ] && echo n/a || echo "${1}x"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "n/a"; else printf "%.2f", a / b }'; }
verdict() {  # value op goal
  awk -v v="$1" -v op="$2" -v g="$3" 'BEGIN { if (v == "n/a" || v == "") { print "n/a"; exit }
    ok = (op == "<=" ? v <= g : op == ">=" ? v >= g : v < g); print (ok ? "meets" : "MISSES") }'
}

table=$logs/table.md
{
  echo "| tool | phase | wall s | peak RSS MB | repo MB | runs |"
  echo "|---|---|---:|---:|---:|---:|"
  awk -F'\t' '{ printf "| %s | %s | %.2f | %.0f | %s | %d |\n", $1, $2, $3, $4 / 1024, ($5 == "" ? "-" : sprintf("%.1f", $5 / 1048576)), $6 }' "$summary"
} >"$table"

hf_init=$(get holdfast 1-initial 3); hf_inc=$(get holdfast 2-incremental 3); hf_nc=$(get holdfast 3-no-change 3)
hf_rest=$(get holdfast 4-restore 3); hf_size=$(get holdfast 3-no-change 5)
floor_tar=$(get floor "tar+zstd-3" 3); floor_unpack=$(get floor unpack 3)
hf_rss_max=$(awk -F'\t' '$1 == "holdfast" && $4 > m { m = $4 } END { if (m == "") print "n/a"; else printf "%.0f", m / 1024 }' "$summary")

ratios_tsv=$logs/ratios.tsv
ratios=$logs/ratios.md
row() { printf '%s\t%s\t%s\t%s\n' "$@"; }
{
  r=$(ratio "$hf_init" "$floor_tar"); row "holdfast initial backup / tar+zstd floor" "$(x "$r")" "<= 1.1x" "$(verdict "$r" "<=" 1.1)"
  for peer in restic rustic borg; do
    if [ -z "$(get "$peer" 2-incremental 3)" ]; then
      [ $peer = borg ] || row "incremental and no-change vs $peer" "n/a" ">= 2x" "not measured ($peer not run)"
      continue
    fi
    goal=">= 2x"; [ $peer = borg ] && goal="(info)"
    r=$(ratio "$(get "$peer" 2-incremental 3)" "$hf_inc"); row "incremental: $peer time / holdfast time" "$(x "$r")" "$goal" "$([ $peer = borg ] && echo - || verdict "$r" ">=" 2)"
    r=$(ratio "$(get "$peer" 3-no-change 3)" "$hf_nc"); row "no-change: $peer time / holdfast time" "$(x "$r")" "$goal" "$([ $peer = borg ] && echo - || verdict "$r" ">=" 2)"
  done
  row "holdfast no-change backup" "$([ -n "$hf_nc" ] && echo "$hf_nc s" || echo n/a)" "<= 0.3 s" "$(verdict "${hf_nc:-n/a}" "<=" 0.3)"
  r=$(ratio "$hf_rest" "$floor_unpack"); row "holdfast restore / unpack floor" "$(x "$r")" "<= 1.0x" "$(verdict "$r" "<=" 1.0)"
  for peer in restic rustic borg; do
    ps=$(get "$peer" 3-no-change 5)
    if [ -z "$ps" ]; then
      [ $peer != restic ] || row "repository size: holdfast / restic" "n/a" "<= 1.0x" "not measured (restic not run)"
      continue
    fi
    goal="<= 1.0x"; [ $peer = restic ] || goal="(info)"
    r=$(ratio "$hf_size" "$ps"); row "repository size: holdfast / $peer" "$(x "$r")" "$goal" "$([ $peer = restic ] && verdict "$r" "<=" 1.0 || echo -)"
  done
  row "holdfast peak RSS, worst phase" "$([ "$hf_rss_max" = n/a ] && echo n/a || echo "$hf_rss_max MB")" "< 150 MB" "$(verdict "$hf_rss_max" "<" 150)"
} >"$ratios_tsv"
{
  echo "| ratio | value | goal | verdict |"
  echo "|---|---:|---|---|"
  awk -F'\t' '{ gsub(/\|/, "\\|", $1); printf "| %s | %s | %s | %s |\n", $1, $2, $3, $4 }' "$ratios_tsv"
} >"$ratios"

{
  echo "# holdfast benchmark: latest run"
  echo
  echo "Run $(date -u '+%Y-%m-%d %H:%M UTC') by \`bench/run.sh\`. Data: Linux $v_old -> $v_new ($tree_files files, $((tree_bytes / 1024 / 1024)) MB),"
  echo "source, repositories and restore targets on tmpfs, caches warm. Wall time is the best of the runs"
  echo "(column *runs*), peak RSS the highest; repository size after the phase (for the restore: unchanged)."
  echo
  echo "Machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p' | head -n 1), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, kernel $(uname -r);"
  echo "load average at start $load_start, at end $load_end."
  echo
  echo "Tools: $(for t in "${tools[@]}"; do printf '%s; ' "$(tool_version "$t")"; done)zstd $(zstd --version | grep -o "v[0-9.]*" | head -n 1); $(tar --version | head -n 1)."
  [ ${#skipped[@]} -eq 0 ] || { echo; echo "Skipped: ${skipped[*]}."; }
  [ ${#failed[@]} -eq 0 ] || { echo; echo "Failed rounds (not in the table): ${failed[*]} (logs in $logs)."; }
  echo
  echo "Overlay linux-new (phase 2 change set): ${overlay_summaries[0]#*: }."
  echo
  cat "$table"
  echo
  cat "$ratios"
  echo
  echo "<details><summary>every measurement</summary>"
  echo
  echo "| tool | phase | wall s | peak RSS KB | repo bytes | exit |"
  echo "|---|---|---:|---:|---:|---:|"
  awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, ($5 == "" ? "-" : $5), $6 }' "$raw"
  echo
  echo "</details>"
} >"$results/latest.md"

hr
column -t -s $'\t' < <(echo -e "tool\tphase\twall_s\tpeak_RSS_MB\trepo_MB\truns"; awk -F'\t' '{ printf "%s\t%s\t%.2f\t%.0f\t%s\t%d\n", $1, $2, $3, $4 / 1024, ($5 == "" ? "-" : sprintf("%.1f", $5 / 1048576)), $6 }' "$summary") || cat "$summary"
hr
column -t -s $'\t' "$ratios_tsv" || cat "$ratios_tsv"
hr
for o in "${overlay_summaries[@]}"; do say "overlay $o"; done
[ ${#skipped[@]} -eq 0 ] || say "SKIPPED: ${skipped[*]}"
[ ${#failed[@]} -eq 0 ] || say "FAILED rounds: ${failed[*]}"
say "written: $results/latest.md   logs: $logs"
[ ${#failed[@]} -eq 0 ]
