#!/usr/bin/env bash
# Point-in-time recovery benchmark: holdfast's WAL archive side by side with pgBackRest on the
# same PostgreSQL server, in the same run, everything on tmpfs.
#
#   1. archive throughput: a backlog of WAL (archiving paused while pgbench writes), then the
#      archiver is pointed at each tool and timed until the backlog is drained (segments/s);
#   2. restore to a point in time: base backup + WAL replay up to a target inside the backlog,
#      until the server accepts connections (seconds);
#   3. the cost of meeting a 5-minute RPO as the database grows: one logical dump every 5 min
#      (what holdfast does without continuous protection) versus the WAL of the same writes.
#
# usage: bench/pitr.sh            (needs postgresql, postgresql-contrib, pgbackrest packages)
# knobs: SCALE (pgbench scale of the main database, default 100, about 1.5 GB),
#        BACKLOG_TX (pgbench transactions written while archiving is paused, default 200000),
#        SIZES (scales for part 3, default "10 50 100"), HOLDFAST_BIN (default target/release/holdfast),
#        PGBR_PROCESS_MAX (pgBackRest async processes, default 2 = the cores here),
#        KEEP=1 (keep the tmpfs work directory).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
scale=${SCALE:-100}
backlog_tx=${BACKLOG_TX:-200000}
sizes=${SIZES:-"10 50 100"}
hf=${HOLDFAST_BIN:-$root/target/release/holdfast}
[ -x "$hf" ] || cargo build --release -q -p holdfast
command -v pgbackrest >/dev/null || { echo "pgbackrest is missing: apt-get install -y pgbackrest" >&2; exit 1; }
bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
work=$(mktemp -d /dev/shm/holdfast-pitr-bench.XXXXXX)
chmod 755 "$work"
as_pg() { if [ "$(id -u)" = 0 ]; then setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; else "$@"; fi; }
stop_all() {
  for d in "$work"/pg "$work"/rst/r-*; do [ -f "$d/postmaster.pid" ] && as_pg "$bindir/pg_ctl" -D "$d" -m immediate stop >/dev/null 2>&1; done
  return 0
}
trap 'stop_all; [ "${KEEP:-0}" = 1 ] || rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
say() { printf '%s\n' "$*" >&2; }

unset HOLDFAST_INSECURE_TEST_KDF || true
export BENCH_PW=holdfast-bench-password
port=$(free_port)
export PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres
mkdir -p "$work/pg" "$work/state" "$work/repo" "$work/pgbr" "$work/pgbr-spool" "$work/log" "$work/rst"
[ "$(id -u)" = 0 ] && chown postgres: "$work/pg" "$work/state" "$work/repo" "$work/pgbr" "$work/pgbr-spool" "$work/log" "$work/rst"

cat > "$work/holdfast.toml" <<TOML
[repository.local]
url = "$work/repo"
password-env = "BENCH_PW"
[class.critical]
rpo = "5m"
rto = "10m"
[[source]]
name = "pg"
kind = "postgres"
mode = "continuous"
host = "127.0.0.1"
port = $port
user = "postgres"
class = "critical"
strategy = "backup"
TOML
cat > "$work/pgbr.conf" <<CONF
[global]
repo1-path=$work/pgbr
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=$BENCH_PW
compress-type=zst
archive-async=y
spool-path=$work/pgbr-spool
process-max=${PGBR_PROCESS_MAX:-2}
log-path=$work/log
lock-path=$work/log
log-level-console=warn
start-fast=y
[bench]
pg1-path=$work/pg
pg1-port=$port
pg1-socket-path=$work/pg
CONF
[ "$(id -u)" = 0 ] && chown postgres: "$work/pgbr.conf" "$work/holdfast.toml"
hf_env=(env BENCH_PW=$BENCH_PW HOLDFAST_CONFIG=$work/holdfast.toml HOLDFAST_STATE_DIR=$work/state)

as_pg "$bindir/initdb" -D "$work/pg" -U postgres --auth=trust --no-sync >/dev/null
cat >> "$work/pg/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$work/pg'
fsync = off
wal_level = replica
archive_mode = on
archive_command = '/bin/false'
max_wal_size = 16GB
checkpoint_timeout = 1h
CONF
as_pg "${hf_env[@]}" "$bindir/pg_ctl" -D "$work/pg" -l "$work/pg/log" -w start >/dev/null
psql -Xq -c "create database bench" >/dev/null
say "pgbench -i -s $scale"
pgbench -i -q -s "$scale" bench >/dev/null 2>&1
db_bytes=$(psql -XAt -c "select pg_database_size('bench')")

archive_with() { # $1: archive_command
  psql -Xq -c "alter system set archive_command = '$1'" -c "select pg_reload_conf()" >/dev/null
}
ready() { find "$work/pg/pg_wal/archive_status" -name '*.ready' | wc -l; }
drain() { # $1: label; times the archiver until no segment waits
  local t0 t1 n
  n=$(ready)
  t0=$(now)
  while [ "$(ready)" -gt 0 ]; do sleep 0.2; done
  t1=$(now)
  printf '%s %s %s\n' "$1" "$n" "$(echo "$t1 - $t0" | bc -l)"
}

hf_push="${hf_env[*]} $hf --quiet wal-push --source pg"
br_push="pgbackrest --config=$work/pgbr.conf --stanza=bench archive-push"
# Base backups first, each tool archiving everything (both archive_commands, one after the other).
say "base backups"
as_pg pgbackrest --config="$work/pgbr.conf" --stanza=bench stanza-create >/dev/null
archive_with "$hf_push %p && $br_push %p"
as_pg "${hf_env[@]}" "$hf" --quiet protect >"$work/log/protect.txt" 2>&1 || { rc=$?; [ $rc = 4 ] || { cat "$work/log/protect.txt" >&2; exit 1; }; }
as_pg pgbackrest --config="$work/pgbr.conf" --stanza=bench --type=full backup >/dev/null
psql -XAtq -c "select pg_switch_wal()" >/dev/null
while [ "$(ready)" -gt 0 ]; do sleep 0.2; done
archive_with "/bin/false"

# Each tool drains a backlog alone (timed); the other then gets the same files (untimed), so
# both archives stay whole for the restore.
results=()
for tool in holdfast pgbackrest; do
  say "backlog for $tool: $backlog_tx pgbench transactions with archiving paused"
  # A checkpoint first, so both backlogs carry the same full-page writes.
  psql -XAtq -c "checkpoint" >/dev/null
  pgbench -n -c 2 -j 2 -t $((backlog_tx / 2)) bench >/dev/null 2>&1
  target=$(psql -XAt -c "select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')")
  psql -Xq -d bench -c "create table if not exists marker(t text); insert into marker values ('$tool')" >/dev/null
  psql -XAtq -c "select pg_switch_wal()" >/dev/null
  sleep 1
  backlog=$(cd "$work/pg/pg_wal/archive_status" && ls | sed -n 's/\.ready$//p' | sort)
  # (pgBackRest's asynchronous push only takes files PostgreSQL marked ready: the catch-up of
  # files already archived by holdfast goes synchronously.)
  if [ $tool = holdfast ]; then archive_with "$hf_push %p"; other="$br_push --no-archive-async"; else archive_with "$br_push %p"; other=$hf_push; fi
  read -r _ n secs < <(drain $tool)
  archive_with "/bin/false"
  for f in $backlog; do as_pg sh -c "cd $work/pg && $other pg_wal/$f" >/dev/null; done
  targets+=("$target")
  results+=("$(printf '%-11s %8d segments in %7.2f s = %7.1f segments/s (%6.1f MB/s)' $tool "$n" "$secs" "$(echo "$n / $secs" | bc -l)" "$(echo "$n * 16 / $secs" | bc -l)")")
  rates+=("$(echo "$n / $secs" | bc -l)")
done
# The restore target: inside the first backlog, so both replay the base backup and a whole
# backlog of WAL; then everything after it goes to both archives.
target=${targets[0]}
archive_with "$hf_push %p && $br_push %p"
psql -XAtq -c "select pg_switch_wal()" >/dev/null
while [ "$(ready)" -gt 0 ]; do sleep 0.2; done
as_pg "$bindir/pg_ctl" -D "$work/pg" -m fast stop >/dev/null

# Restore to the target time set before each tool's backlog ended (the whole backlog and the
# base backup replayed): both restore to the holdfast target, which both archives hold.
restore_time() { # $1 tool; prints "total files replay": the restore of the files, then the
  # recovery (WAL fetched and replayed until the server is promoted)
  local d=$work/rst/r-$1 p t0 t1 t2
  p=$(free_port)
  mkdir -p "$d"; [ "$(id -u)" = 0 ] && chown postgres: "$d"
  t0=$(now)
  if [ "$1" = holdfast ]; then
    as_pg "${hf_env[@]}" "$hf" --quiet restore --source pg --at "$target" --no-archive --target "$d" >"$work/log/hf-restore.txt" 2>&1 || { cat "$work/log/hf-restore.txt" >&2; exit 1; }
  else
    as_pg pgbackrest --config="$work/pgbr.conf" --stanza=bench --pg1-path="$d" --type=time "--target=$target+00" --target-action=promote --archive-mode=off restore >/dev/null
  fi
  t1=$(now)
  printf "port = %s\nunix_socket_directories = '%s'\n" "$p" "$d" >> "$d/postgresql.auto.conf"
  as_pg "${hf_env[@]}" "$bindir/pg_ctl" -D "$d" -l "$d/log" -w -t 3600 start >/dev/null || { tail -20 "$d/log" >&2; exit 1; }
  until [ "$(psql -XAt -h "$d" -p "$p" -c 'select pg_is_in_recovery()' 2>/dev/null)" = f ]; do sleep 0.1; done
  t2=$(now)
  echo "$(echo "$t2 - $t0" | bc -l) $(echo "$t1 - $t0" | bc -l) $(echo "$t2 - $t1" | bc -l)"
  [ -f "$d/postmaster.pid" ] && as_pg "$bindir/pg_ctl" -D "$d" -m immediate stop >/dev/null 2>&1
  rm -rf "$d"
  return 0
}
say "restore to $target UTC"
read -r hf_restore hf_files hf_replay < <(restore_time holdfast)
read -r br_restore br_files br_replay < <(restore_time pgbackrest)

hf_repo=$(du -sb "$work/repo" | cut -f1)
br_repo=$(du -sb "$work/pgbr" | cut -f1)

# Part 3: the cost of a 5-minute RPO, per database size: what one 5-minute period of writes
# costs as a logical dump (pg_dump through holdfast, deduplicated) and as WAL.
cost=()
as_pg "${hf_env[@]}" "$bindir/pg_ctl" -D "$work/pg" -l "$work/pg/log" -w start >/dev/null
archive_with "/bin/false"
for s in $sizes; do
  psql -Xq -c "drop database if exists c$s" -c "create database c$s" >/dev/null
  pgbench -i -q -s "$s" "c$s" >/dev/null 2>&1
  cat > "$work/dump.toml" <<TOML
[repository.local]
url = "$work/dumprepo-$s"
password-env = "BENCH_PW"
[class.critical]
rpo = "5m"
rto = "10m"
[[source]]
name = "c$s"
kind = "postgres"
database = "c$s"
host = "127.0.0.1"
port = $port
user = "postgres"
class = "critical"
strategy = "backup"
TOML
  env BENCH_PW=$BENCH_PW HOLDFAST_STATE_DIR=$work/dstate-$s "$hf" --config "$work/dump.toml" --quiet protect >/dev/null 2>&1 || true
  lsn0=$(psql -XAt -c "select pg_current_wal_lsn()")
  pgbench -n -t 3000 "c$s" >/dev/null 2>&1
  lsn1=$(psql -XAt -c "select pg_current_wal_lsn()")
  wal=$(psql -XAt -c "select pg_wal_lsn_diff('$lsn1', '$lsn0')")
  before=$(du -sb "$work/dumprepo-$s" | cut -f1)
  t0=$(now)
  env BENCH_PW=$BENCH_PW HOLDFAST_STATE_DIR=$work/dstate-$s HOLDFAST_NOW=$(date -u -d '+10 min' +%FT%TZ) "$hf" --config "$work/dump.toml" --quiet protect >/dev/null 2>&1 || true
  t1=$(now)
  after=$(du -sb "$work/dumprepo-$s" | cut -f1)
  size=$(psql -XAt -c "select pg_database_size('c$s')")
  cost+=("$(printf '%6s %9.0f MB   dump: %6.2f s, %8.1f MB added   WAL: %8.1f MB' "$s" "$(echo "$size/1048576" | bc -l)" "$(echo "$t1 - $t0" | bc -l)" "$(echo "($after-$before)/1048576" | bc -l)" "$(echo "$wal/1048576" | bc -l)")")
done

echo
echo "PostgreSQL $(basename "$(dirname "$bindir")"), database $(echo "$db_bytes/1048576" | bc) MB (pgbench scale $scale), $(nproc) cores, tmpfs"
echo "holdfast $("$hf" --version | cut -d' ' -f2) vs pgBackRest $(pgbackrest version | cut -d' ' -f2) (archive-async, process-max ${PGBR_PROCESS_MAX:-2}, zst, aes-256-cbc)"
echo
echo "1. archive throughput (draining a backlog of $backlog_tx pgbench transactions):"
printf '   %s\n' "${results[@]}"
printf '   holdfast/pgbackrest throughput = %.2f\n' "$(echo "${rates[0]} / ${rates[1]}" | bc -l)"
echo
echo "2. restore to a point in time ($target UTC: a base backup and a whole backlog of WAL), until the server is promoted:"
echo "   (the same steps for both: the tool restores the files and writes the recovery settings, pg_ctl starts the server)"
printf '   holdfast   %7.2f s (files %6.2f s, WAL fetch and replay %6.2f s)\n' "$hf_restore" "$hf_files" "$hf_replay"
printf '   pgbackrest %7.2f s (files %6.2f s, WAL fetch and replay %6.2f s)\n' "$br_restore" "$br_files" "$br_replay"
printf '   holdfast/pgbackrest = %.2f (files %.2f, replay %.2f)\n' "$(echo "$hf_restore / $br_restore" | bc -l)" "$(echo "$hf_files / $br_files" | bc -l)" "$(echo "$hf_replay / $br_replay" | bc -l)"
echo
printf '   repository size: holdfast %.1f MB, pgbackrest %.1f MB\n' "$(echo "$hf_repo/1048576" | bc -l)" "$(echo "$br_repo/1048576" | bc -l)"
echo
echo "3. one 5-minute RPO period (3000 pgbench transactions) by database size: a dump vs its WAL"
echo " scale   size        cost of one more dump                  WAL of the same writes"
printf '   %s\n' "${cost[@]}"
