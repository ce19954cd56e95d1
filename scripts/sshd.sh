#!/usr/bin/env bash
# A real OpenSSH server on loopback for the SFTP repository tests: its own host key, a client
# key, and an ssh_config that reaches it as the host alias "holdfast-sftp" with strict host key
# checking against a known_hosts file made here. Nothing outside DIR is touched (but /run/sshd,
# which sshd needs when it runs as root).
#   scripts/sshd.sh up DIR     start it; writes DIR/env (HOLDFAST_SFTP_CONFIG, HOLDFAST_SFTP_HOST)
#   scripts/sshd.sh down DIR   stop it
# With SSHD_OWNER_PID set, `up` also starts a watchdog that stops it when that process exits.
set -euo pipefail
cmd=${1:?usage: sshd.sh up|down DIR}
dir=${2:?directory}
sshd=${SSHD_BIN:-/usr/sbin/sshd}
case "$cmd" in
up)
  [ -x "$sshd" ] || { echo "sshd not found at $sshd: apt-get install openssh-server (scripts/test.sh does it)" >&2; exit 1; }
  command -v ssh >/dev/null || { echo "ssh not found: apt-get install openssh-client" >&2; exit 1; }
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  rm -f "$dir"/host_key* "$dir"/id "$dir"/id.pub
  ssh-keygen -q -t ed25519 -N '' -f "$dir/host_key"
  ssh-keygen -q -t ed25519 -N '' -f "$dir/id"
  cp "$dir/id.pub" "$dir/authorized_keys"
  chmod 600 "$dir/authorized_keys"
  [ "$(id -u)" = 0 ] && mkdir -p /run/sshd && chmod 755 /run/sshd
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  cat >"$dir/sshd_config" <<CONF
ListenAddress 127.0.0.1
Port $port
HostKey $dir/host_key
AuthorizedKeysFile $dir/authorized_keys
PidFile $dir/sshd.pid
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
CONF
  echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$dir/host_key.pub")" >"$dir/known_hosts"
  cat >"$dir/ssh_config" <<CONF
Host holdfast-sftp
  HostName 127.0.0.1
  Port $port
  User $(id -un)
  IdentityFile $dir/id
  IdentitiesOnly yes
  UserKnownHostsFile $dir/known_hosts
  StrictHostKeyChecking yes
  BatchMode yes
CONF
  "$sshd" -f "$dir/sshd_config" -D -e >"$dir/log" 2>&1 &
  echo $! >"$dir/pid"
  for _ in $(seq 1 100); do
    ssh -F "$dir/ssh_config" holdfast-sftp true >/dev/null 2>&1 && break
    kill -0 "$(cat "$dir/pid")" 2>/dev/null || { cat "$dir/log" >&2; echo "sshd exited; read $dir/log" >&2; exit 1; }
    sleep 0.1
  done
  ssh -F "$dir/ssh_config" holdfast-sftp true || { cat "$dir/log" >&2; echo "cannot log in to the test sshd; read $dir/log" >&2; exit 1; }
  cat >"$dir/env" <<ENV
HOLDFAST_SFTP_CONFIG=$dir/ssh_config
HOLDFAST_SFTP_HOST=holdfast-sftp
ENV
  if [ -n "${SSHD_OWNER_PID:-}" ]; then
    (
      while kill -0 "$SSHD_OWNER_PID" 2>/dev/null; do sleep 1; done
      "$0" down "$dir" >/dev/null 2>&1
    ) >/dev/null 2>&1 </dev/null &
  fi
  echo "sshd up in $dir on 127.0.0.1:$port"
  ;;
down)
  [ -f "$dir/pid" ] && kill "$(cat "$dir/pid")" 2>/dev/null || true
  ;;
*) echo "usage: sshd.sh up|down DIR" >&2; exit 2 ;;
esac
