#!/usr/bin/env bash
# Stops the sandbox JupyterHub (sandbox/hub-up.sh) by pid: the Hub stops its single-user servers
# and its proxy as it goes; what is left of them is stopped too. The users' jobs are cancelled.
set -uo pipefail
cd "$(dirname "$0")/.."
HUB="$(pwd)/.sandbox/hub"
HUB_USERS=(${SANDBOX_HUB_USERS:-alice bob})

stop_pid() {  # stop_pid PIDFILE NAME: TERM, wait up to 30 s, then KILL
  local pidfile=$1 name=$2 pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    echo "[hub-down] stopping $name ($pid)"
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$pidfile"
}

stop_pid "$HUB/jupyterhub.pid" JupyterHub
stop_pid "$HUB/proxy.pid" configurable-http-proxy
for u in "${HUB_USERS[@]}"; do
  id "$u" > /dev/null 2>&1 || continue
  pkill -u "$u" -f jupyterhub-singleuser 2>/dev/null
  scancel -u "$u" 2>/dev/null
done
exit 0
