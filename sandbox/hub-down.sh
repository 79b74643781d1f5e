#!/usr/bin/env bash
# Stops the sandbox JupyterHub (sandbox/hub-up.sh) by pid: the Hub stops its single-user servers
# and its proxy as it goes; what is left of them is stopped too. The users' jobs are cancelled.
set -uo pipefail
cd "$(dirname "$0")/.."
HUB="$(pwd)/.sandbox/hub"
HUB_USERS=(${SANDBOX_HUB_USERS:-alice bob})

. sandbox/lib.sh

stop_pid "$HUB/jupyterhub.pid" JupyterHub 30
stop_pid "$HUB/proxy.pid" configurable-http-proxy
for u in "${HUB_USERS[@]}"; do
  id "$u" > /dev/null 2>&1 || continue
  pkill -u "$u" -f jupyterhub-singleuser 2>/dev/null
  scancel -u "$u" 2>/dev/null
done
exit 0
