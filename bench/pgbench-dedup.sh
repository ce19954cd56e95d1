#!/usr/bin/env bash
# Repository growth for ten logical backups of a slowly changing pgbench database.
# Starts a throwaway PostgreSQL on tmpfs, initialises pgbench (scale ${SCALE:-10}), then ten times:
# runs ${TX:-200} pgbench transactions and backs the database up through `holdfast protect`
# (pg_dump custom format, uncompressed, deduplicated and zstd-compressed by holdfast).
# Prints the dump size and how much each backup added to the repository.
# usage: bench/pgbench-dedup.sh     (needs the postgresql and postgresql-contrib packages)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p holdfast
hf=$PWD/target/release/holdfast
work=$(mktemp -d /dev/shm/holdfast-pgbench.XXXXXX)
trap 'su postgres -s /bin/sh -c "$bindir/pg_ctl -D $work/pg -m immediate stop" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
chmod 755 "$work"
as_pg() { if [ "$(id -u)" = 0 ]; then setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; else "$@"; fi; }
mkdir "$work/pg"; [ "$(id -u)" = 0 ] && chown postgres: "$work/pg"
as_pg "$bindir/initdb" -D "$work/pg" -U postgres --auth=trust --no-sync >/dev/null
as_pg "$bindir/pg_ctl" -D "$work/pg" -l "$work/pg/log" -w -o "-p $port -k $work/pg -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
export PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres
createdb bench
pgbench -i -q -s "${SCALE:-10}" bench >/dev/null 2>&1
cat > "$work/holdfast.toml" <<TOML
[repository.local]
url = "repo"
password-env = "BENCH_PW"
[class.critical]
rpo = "15m"
rto = "10m"
[[source]]
name = "bench"
kind = "postgres"
database = "bench"
host = "127.0.0.1"
port = $port
user = "postgres"
class = "critical"
strategy = "backup"
TOML
export BENCH_PW=bench HOLDFAST_CONFIG=$work/holdfast.toml HOLDFAST_STATE_DIR=$work/state
printf "%-7s %12s %14s %14s %9s\n" backup "dump MB" "repo MB" "added MB" seconds
prev=0
t0=$(date +%s)
for i in $(seq 1 10); do
  [ "$i" -gt 1 ] && pgbench -n -t "${TX:-200}" bench >/dev/null 2>&1
  now=$(date -u -d "@$((t0 + i * 3600))" +%FT%TZ)
  s=$(date +%s.%N)
  HOLDFAST_NOW=$now "$hf" --quiet protect >/dev/null || true
  e=$(date +%s.%N)
  size=$(du -sb "$work/repo" | cut -f1)
  dump=$(HOLDFAST_PASSWORD=bench "$hf" --json --repo "$work/repo" snapshots | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["summary"]["total_bytes"])')
  printf "%-7s %12.1f %14.1f %14.2f %9.2f\n" "$i" "$(echo "$dump/1048576" | bc -l)" "$(echo "$size/1048576" | bc -l)" "$(echo "($size-$prev)/1048576" | bc -l)" "$(echo "$e-$s" | bc -l)"
  prev=$size
done
