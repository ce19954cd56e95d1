#!/usr/bin/env bash
# Azurite, Microsoft's Azure Storage emulator, serving the Blob API on loopback, for the Azure
# Blob repository tests. Installed from the npm registry on first use (with @azure/storage-blob,
# which creates containers), into AZURITE_HOME (default ~/.cache/holdfast/azurite).
#   scripts/azurite.sh up DIR                start it; writes DIR/env (AZURE_STORAGE_* variables)
#   scripts/azurite.sh container DIR NAME    create a container
#   scripts/azurite.sh down DIR              stop it
# With AZURITE_OWNER_PID set, `up` also starts a watchdog that stops it when that process exits.
set -euo pipefail
cmd=${1:?usage: azurite.sh up|container|down DIR}
dir=${2:?directory}
home=${AZURITE_HOME:-$HOME/.cache/holdfast/azurite}
# The emulator's well-known development account (public, documented by Microsoft).
account=devstoreaccount1
key='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
install() {
  [ -x "$home/node_modules/.bin/azurite-blob" ] && [ -d "$home/node_modules/@azure/storage-blob" ] && return 0
  command -v npm >/dev/null || { echo "azurite: npm is missing (Debian: apt-get install npm)" >&2; exit 1; }
  mkdir -p "$home"
  echo "azurite: installing azurite and @azure/storage-blob into $home" >&2
  (cd "$home" && npm install --no-audit --no-fund --loglevel=error azurite@3 @azure/storage-blob@12 >"$home/npm.log" 2>&1) ||
    { echo "azurite: npm install failed; read $home/npm.log" >&2; exit 1; }
}
case "$cmd" in
up)
  install
  mkdir -p "$dir/data"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  setsid "$home/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$port" \
    --location "$dir/data" --disableTelemetry --skipApiVersionCheck --silent \
    </dev/null >"$dir/log" 2>&1 &
  echo $! >"$dir/pid"
  for _ in $(seq 1 100); do
    curl -s -o /dev/null "http://127.0.0.1:$port/" && break
    kill -0 "$(cat "$dir/pid")" 2>/dev/null || { cat "$dir/log" >&2; echo "azurite exited; read $dir/log" >&2; exit 1; }
    sleep 0.1
  done
  cat >"$dir/env" <<ENV
AZURE_STORAGE_ACCOUNT=$account
AZURE_STORAGE_KEY=$key
AZURE_STORAGE_ENDPOINT=http://127.0.0.1:$port/$account
ENV
  if [ -n "${AZURITE_OWNER_PID:-}" ]; then
    (
      while kill -0 "$AZURITE_OWNER_PID" 2>/dev/null; do sleep 1; done
      "$0" down "$dir" >/dev/null 2>&1
    ) >/dev/null 2>&1 </dev/null &
  fi
  echo "azurite up in $dir: http://127.0.0.1:$port/$account"
  ;;
container)
  name=${3:?container name}
  endpoint=$(awk -F= '/^AZURE_STORAGE_ENDPOINT=/ {print $2}' "$dir/env")
  NODE_PATH="$home/node_modules" node -e '
const { BlobServiceClient, StorageSharedKeyCredential } = require("@azure/storage-blob");
const [endpoint, account, key, name] = process.argv.slice(1);
const svc = new BlobServiceClient(endpoint, new StorageSharedKeyCredential(account, key));
svc.getContainerClient(name).createIfNotExists().then(() => {}, e => { console.error(e.message); process.exit(1); });
' "$endpoint" "$account" "$key" "$name"
  ;;
down)
  [ -f "$dir/pid" ] && kill "$(cat "$dir/pid")" 2>/dev/null || true
  ;;
*) echo "usage: azurite.sh up|container|down DIR" >&2; exit 2 ;;
esac
