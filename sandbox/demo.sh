#!/usr/bin/env bash
# Starts JupyterLab configured for the sandbox cluster (sandbox/up.sh must have run) and prints
# its URL with the token. `sandbox/demo.sh --stop` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SB="$ROOT/.sandbox"
PORT=${1:-8888}
IP=${DEMO_IP:-127.0.0.1}
pidfile="$SB/jupyterlab.pid"

if [ "${1:-}" = "--stop" ]; then
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    kill "$(cat "$pidfile")"; echo "stopped JupyterLab ($(cat "$pidfile"))"
  fi
  rm -f "$pidfile"; exit 0
fi

[ -f "$SB/jupyter_server_config.py" ] || { echo "run make sandbox-up first" >&2; exit 1; }
[ -f "$SB/demo-token" ] || python3 -c 'import secrets; print(secrets.token_hex(24))' > "$SB/demo-token"
chmod 600 "$SB/demo-token"
token=$(cat "$SB/demo-token")
mkdir -p "$SB/notebooks"

if ! { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }; then
  nohup "$ROOT/.venv/bin/jupyter" lab --allow-root --no-browser \
    --config="$SB/jupyter_server_config.py" \
    --ServerApp.ip="$IP" --ServerApp.port="$PORT" --ServerApp.port_retries=0 \
    --IdentityProvider.token="$token" --ServerApp.root_dir="$SB/notebooks" \
    > "$SB/jupyterlab.log" 2>&1 &
  echo $! > "$pidfile"
fi
for _ in $(seq 1 120); do
  if curl -fs -o /dev/null -H "Authorization: token $token" "http://$IP:$PORT/api/hpc/health"; then
    echo
    echo "JupyterLab with jupyter-hpc-manager and the sandbox clusters (gemini, apollo):"
    echo "    http://$IP:$PORT/lab?token=$token"
    echo
    echo "REST, for example:"
    echo "    curl -H 'Authorization: token $token' http://$IP:$PORT/api/hpc/cluster-status"
    echo "Log: $SB/jupyterlab.log   Stop: make demo-stop   Stop the sandbox: make sandbox-down"
    exit 0
  fi
  kill -0 "$(cat "$pidfile")" 2>/dev/null || { tail -20 "$SB/jupyterlab.log" >&2; exit 1; }
  sleep 0.5
done
echo "JupyterLab did not answer; see $SB/jupyterlab.log" >&2
exit 1
