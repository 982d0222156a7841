#!/usr/bin/env bash
# An ssh endpoint for the SECOND Docker engine (scripts/docker-up-second.sh calls this), so the
# kit's tests reach it as `docker: ssh://kit-docker2` the way a remote host is reached: the
# docker CLI runs `ssh kit-docker2 docker system dial-stdio`, and the docker CLI on the other end
# talks to the second engine. Idempotent: safe to run again.
#
#   sshd     its own instance on 127.0.0.1:29201 (KIT_DOCKER2_SSH_PORT), config, host key and
#            authorized key in /var/lib/kit-docker2-ssh (KIT_DOCKER2_SSH), made once; key login
#            only (root), DOCKER_HOST set to the second engine's socket for every session
#   client   /etc/ssh/ssh_config.d/kit-docker2.conf: host alias kit-docker2 -> that sshd, with the
#            generated client key and the sshd's host key as the only known one (no prompts)
#   package  openssh-server (apt) when sshd is missing; Debian's own sshd service is not started
set -euo pipefail

SSH_DIR="${KIT_DOCKER2_SSH:-/var/lib/kit-docker2-ssh}"
PORT="${KIT_DOCKER2_SSH_PORT:-29201}"
SOCK="${KIT_DOCKER2_SOCK:-/run/kit-docker2/docker.sock}"
ALIAS=kit-docker2
CLIENT_CONF=/etc/ssh/ssh_config.d/kit-docker2.conf
LOG="${KIT_SSHD2_LOG:-/var/log/kit-sshd2.log}"

log() { echo "ssh-up-second: $*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

[ "$(id -u)" -eq 0 ] || die "run as root"
if [ ! -x /usr/sbin/sshd ] || ! command -v ssh >/dev/null 2>&1; then
  log "installing openssh-server"
  apt-get update -qq
  # no init here: the package's own sshd service does not start (only ours below does)
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client >/dev/null
fi
command -v docker >/dev/null 2>&1 || die "the docker CLI is missing (the far end runs it)"

mkdir -p "$SSH_DIR" /run/sshd
chmod 700 "$SSH_DIR"
[ -s "$SSH_DIR/host_ed25519" ] || ssh-keygen -q -t ed25519 -N "" -C kit-docker2-host \
  -f "$SSH_DIR/host_ed25519"
[ -s "$SSH_DIR/client_ed25519" ] || ssh-keygen -q -t ed25519 -N "" -C kit-docker2-client \
  -f "$SSH_DIR/client_ed25519"
cp "$SSH_DIR/client_ed25519.pub" "$SSH_DIR/authorized_keys"
echo "[127.0.0.1]:$PORT $(cut -d' ' -f1-2 "$SSH_DIR/host_ed25519.pub")" >"$SSH_DIR/known_hosts"
cat >"$SSH_DIR/sshd_config" <<EOF
Port $PORT
ListenAddress 127.0.0.1
HostKey $SSH_DIR/host_ed25519
AuthorizedKeysFile $SSH_DIR/authorized_keys
PidFile /run/kit-docker2-sshd.pid
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
X11Forwarding no
SetEnv DOCKER_HOST=unix://$SOCK
MaxStartups 100:30:200
MaxSessions 100
EOF
cat >"$CLIENT_CONF.tmp" <<EOF
# scripts/ssh-up-second.sh: the kit's test endpoint ssh://$ALIAS (the second Docker engine)
Host $ALIAS
  HostName 127.0.0.1
  Port $PORT
  User root
  IdentityFile $SSH_DIR/client_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile $SSH_DIR/known_hosts
  StrictHostKeyChecking yes
  BatchMode yes
EOF
mv "$CLIENT_CONF.tmp" "$CLIENT_CONF"
/usr/sbin/sshd -t -f "$SSH_DIR/sshd_config" || die "sshd rejects $SSH_DIR/sshd_config"

answers() { ssh -o ConnectTimeout=3 "$ALIAS" docker info --format '{{.Name}}' >/dev/null 2>&1; }
if answers; then
  log "sshd already running (ssh://$ALIAS)"
else
  pid="$(cat /run/kit-docker2-sshd.pid 2>/dev/null || true)"
  # a stale instance of ours (another config): replace it
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && sleep 0.5
  log "starting sshd on 127.0.0.1:$PORT (log: $LOG)"
  /usr/sbin/sshd -f "$SSH_DIR/sshd_config" -E "$LOG"
  for _ in $(seq 1 20); do
    answers && break
    sleep 0.25
  done
  answers || { tail -20 "$LOG" >&2; die "docker over ssh://$ALIAS does not answer; see $LOG"; }
fi
log "ready: docker -H ssh://$ALIAS reaches unix://$SOCK"
