#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need, then runs every test,
# the formatter check and clippy. Used by CI (.ci/run) and by developers alike.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cargo >/dev/null || { echo "cargo is missing: install Rust with rustup (https://rustup.rs)" >&2; exit 1; }
# Tools the tests use from the system (real components, no mocks).
command -v setpriv >/dev/null || need_apt+=(util-linux)
command -v zstd >/dev/null || need_apt+=(zstd)
# Real database servers for the source tests (each test starts its own throwaway server).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
command -v pgbench >/dev/null || need_apt+=(postgresql-contrib)
command -v mariadbd >/dev/null || need_apt+=(mariadb-server)
command -v mariadb-dump >/dev/null || need_apt+=(mariadb-client)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing: ${need_apt[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "missing system packages: ${need_apt[*]} (install them, then re-run)" >&2; exit 1
  fi
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
# A real S3-compatible store for the object-storage tests: Garage, built from crates.io once.
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v garage >/dev/null; then
  echo "installing garage (cargo install; takes a while the first time)"
  cargo install garage --locked --no-default-features --features bundled-libs,lmdb,sqlite --quiet
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo test"
set +e
cargo test --workspace --no-fail-fast 2>&1 | tee /tmp/holdfast-test.log
status=${PIPESTATUS[0]}
set -e
# A summary line CI can read: the totals over every test binary.
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "%d passed, %d failed, %d skipped\n", p, f, i }' /tmp/holdfast-test.log
exit "$status"
