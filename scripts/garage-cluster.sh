#!/usr/bin/env bash
# A real Garage cluster on loopback: three nodes in three zones, replication factor 3, one bucket
# and one key. Used by the object-storage tests and benchmarks.
#   scripts/garage-cluster.sh up DIR [BUCKET]   start it; writes DIR/env (AWS_* variables) and DIR/nodes
#   scripts/garage-cluster.sh down DIR          stop it
#   scripts/garage-cluster.sh kill DIR N        SIGKILL node N (1..3), for fault tests
#   scripts/garage-cluster.sh start DIR N       restart node N
#   scripts/garage-cluster.sh key DIR NAME PERM...  a new key with PERM (read, write, owner) on the
#                                               bucket; prints its AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY
# GARAGE_NODES=1 starts a single node with replication factor 1 instead (for benchmarks that
# separate the store's own cost from the client's).
# With GARAGE_OWNER_PID set, `up` also starts a watchdog that stops the cluster when that process
# exits and removes DIR (tests pass their own pid, so no node and no data outlives the test run).
set -euo pipefail
cmd=${1:?usage: garage-cluster.sh up|down|kill|start DIR ...}
dir=${2:?directory}
garage=${GARAGE_BIN:-$(command -v garage || echo "$HOME/.cargo/bin/garage")}
[ -x "$garage" ] || { echo "garage not found: cargo install garage (scripts/test.sh does it)" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
node_cfg() { echo "$dir/node$1/garage.toml"; }
# The nodes this cluster has (from the up call, or from the files it left).
nodes() {
  if [ -n "${GARAGE_NODES:-}" ]; then seq 1 "$GARAGE_NODES"
  else for n in 1 2 3; do [ -d "$dir/node$n" ] && echo "$n"; done; fi
}
start_node() {
  local n=$1
  "$garage" -c "$(node_cfg "$n")" server >"$dir/node$n/log" 2>&1 &
  echo $! >"$dir/node$n/pid"
}
case "$cmd" in
up)
  bucket=${3:-holdfast}
  mkdir -p "$dir"
  secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
  token=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
  count=${GARAGE_NODES:-3}
  case "$count" in 1 | 3) ;; *) echo "GARAGE_NODES must be 1 or 3" >&2; exit 2 ;; esac
  for n in $(seq 1 "$count"); do
    mkdir -p "$dir/node$n/meta" "$dir/node$n/data"
    rpc=$(free_port); s3=$(free_port); admin=$(free_port)
    cat >"$(node_cfg "$n")" <<TOML
metadata_dir = "$dir/node$n/meta"
data_dir = "$dir/node$n/data"
db_engine = "sqlite"
metadata_fsync = false
data_fsync = false
replication_factor = $count
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$secret"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3"
root_domain = ".s3.garage.localhost"
[admin]
api_bind_addr = "127.0.0.1:$admin"
admin_token = "$token"
TOML
    echo "$s3" >"$dir/node$n/s3port"
    start_node "$n"
  done
  g() { "$garage" -c "$(node_cfg 1)" "$@"; }
  for i in $(seq 1 100); do g status >/dev/null 2>&1 && break; sleep 0.2; done
  ids=()
  for n in $(seq 1 "$count"); do
    for i in $(seq 1 100); do
      id=$("$garage" -c "$(node_cfg "$n")" node id -q 2>/dev/null) && break; sleep 0.2
    done
    ids+=("$id")
  done
  # Every node knows every peer at start-up, so the cluster re-forms after a full restart.
  peers=$(printf '"%s",' "${ids[@]}"); peers="bootstrap_peers = [${peers%,}]"
  for n in $(seq 1 "$count"); do sed -i "/^replication_factor/a $peers" "$(node_cfg "$n")"; done
  for id in "${ids[@]:1}"; do g node connect "$id" >/dev/null; done
  for n in $(seq 1 "$count"); do g layout assign -z "dc$n" -c 1G "${ids[$((n-1))]%@*}" >/dev/null; done
  g layout apply --version 1 >/dev/null
  for i in $(seq 1 100); do g bucket create "$bucket" >/dev/null 2>&1 && break; sleep 0.3; done
  keyinfo=$(g key create holdfast-key)
  kid=$(echo "$keyinfo" | awk '/Key ID/ {print $NF}')
  ksec=$(echo "$keyinfo" | awk '/Secret key/ {print $NF}')
  g bucket allow --read --write --owner "$bucket" --key holdfast-key >/dev/null
  cat >"$dir/env" <<ENV
AWS_ENDPOINT_URL=http://127.0.0.1:$(cat "$dir/node1/s3port")
AWS_REGION=garage
AWS_ACCESS_KEY_ID=$kid
AWS_SECRET_ACCESS_KEY=$ksec
HOLDFAST_TEST_BUCKET=$bucket
ENV
  if [ -n "${GARAGE_OWNER_PID:-}" ]; then
    (
      while kill -0 "$GARAGE_OWNER_PID" 2>/dev/null; do sleep 1; done
      "$0" down "$dir" >/dev/null 2>&1
      rm -rf "$dir" # the owner's throwaway cluster: its data would fill the disk run after run
    ) >/dev/null 2>&1 </dev/null &
  fi
  echo "garage cluster up in $dir"
  ;;
down)
  for n in $(nodes); do [ -f "$dir/node$n/pid" ] && kill "$(cat "$dir/node$n/pid")" 2>/dev/null || true; done
  sleep 0.3
  for n in $(nodes); do [ -f "$dir/node$n/pid" ] && kill -9 "$(cat "$dir/node$n/pid")" 2>/dev/null || true; done
  ;;
kill) kill -9 "$(cat "$dir/node${3:?node}/pid")" ;;
start) start_node "${3:?node}" ;;
key)
  name=${3:?key name}; shift 3
  bucket=$(awk -F= '/^HOLDFAST_TEST_BUCKET=/ {print $2}' "$dir/env")
  g() { "$garage" -c "$(node_cfg 1)" "$@"; }
  keyinfo=$(g key create "$name")
  flags=(); for p in "$@"; do flags+=("--$p"); done
  g bucket allow "${flags[@]}" "$bucket" --key "$name" >/dev/null
  echo "AWS_ACCESS_KEY_ID=$(echo "$keyinfo" | awk '/Key ID/ {print $NF}')"
  echo "AWS_SECRET_ACCESS_KEY=$(echo "$keyinfo" | awk '/Secret key/ {print $NF}')"
  ;;
*) echo "unknown command $cmd" >&2; exit 2 ;;
esac
