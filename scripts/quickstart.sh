#!/usr/bin/env bash
# Run holdfast's main job on the embedded default: a local repository, no server.
# Creates a repository under ./holdfast-demo, backs up PATH (default: this project's sources),
# backs it up again (incremental), verifies every byte, restores it and compares.
set -euo pipefail
cd "$(dirname "$0")/.."
src=$(realpath "${1:-crates}")
demo=$PWD/holdfast-demo
cargo build --release -q -p holdfast
hf=$PWD/target/release/holdfast
mkdir -p "$demo"
[ -f "$demo/password" ] || head -c 24 /dev/urandom | base64 > "$demo/password"
export HOLDFAST_REPOSITORY=$demo/repo HOLDFAST_PASSWORD_FILE=$demo/password
[ -f "$demo/repo/config" ] || "$hf" init
"$hf" backup "$src"
"$hf" backup "$src"
"$hf" snapshots
"$hf" check --read-data
rm -rf "$demo/restore"
"$hf" restore latest "$demo/restore"
diff -r "$src" "$demo/restore/$(basename "$src")" && echo "restored tree matches $src"
