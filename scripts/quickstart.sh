#!/usr/bin/env bash
# holdfast's main job on the embedded default (a local repository, no server): the shipped demo
# workload (examples/demo/holdfast.toml) is protected, its restores drilled, and its status shown.
# Run it again at any time: protect only runs what is due.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p holdfast
hf=$PWD/target/release/holdfast
demo=examples/demo
cd "$demo"
# Demo data: an orders ledger (critical), application logs (low), a derived report cache.
mkdir -p data/orders data/logs data/report-cache
[ -s data/orders/ledger.csv ] || seq 1 5000 | awk '{print $1",order-"$1","($1*7)%100}' > data/orders/ledger.csv
date -u +"%FT%TZ demo run" >> data/logs/app.log
sort data/orders/ledger.csv > data/report-cache/report.csv
export HOLDFAST_CONFIG=$PWD/holdfast.toml HOLDFAST_STATE_DIR=$PWD/state
"$hf" plan || true
"$hf" protect || true
"$hf" drill
# The demo workload is about ./data, not about this host: its status skips host discovery
# (plan above ran it). `holdfast discover` shows what else this host holds that nobody declared.
"$hf" status --no-discover --html status.html && echo "status page: $PWD/status.html"
"$hf" discover
