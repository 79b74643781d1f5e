#!/usr/bin/env bash
# Starts a real JupyterHub in front of the sandbox cluster, as root (idempotent; sandbox/up.sh
# must have run): http://127.0.0.1:8000/ with configurable-http-proxy, PAM login and
# LocalProcessSpawner. Users alice and bob (passwords in .sandbox/hub-passwords, user:password
# lines, 0600) each have their own SSH key and their own account on the sandbox cluster. The
# extension is configured once for everybody: a system-wide config that every single-user server
# reads (JUPYTER_CONFIG_PATH), no per-user files; default_url /lab. sandbox/hub-down.sh stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SB="$ROOT/.sandbox"
HUB="$SB/hub"
SANDBOX_PREFIX=${SANDBOX_PREFIX:-/opt/jupyter-hpc-sandbox}
HUB_VENV="$SANDBOX_PREFIX/hub-venv"
CHP_PREFIX="$SANDBOX_PREFIX/chp"
JUPYTERHUB_VERSION=${JUPYTERHUB_VERSION:-6.1.1}
CHP_VERSION=${CHP_VERSION:-5.3.0}
HUB_USERS=(${SANDBOX_HUB_USERS:-alice bob})
HUB_URL=http://127.0.0.1:8000

log() { printf '[hub-up] %s\n' "$*"; }
. sandbox/lib.sh

[ -f "$SB/known_hosts" ] || { echo "the sandbox is not up: run make sandbox-up" >&2; exit 1; }
mkdir -p "$HUB" "$HUB/etc"
chmod 755 "$HUB" "$HUB/etc"
chmod 644 "$SB/known_hosts"

# --- the software: a venv the users can run (from Debian's Python, python3-venv from
# sandbox/install.sh: root's pyenv is 0700), and configurable-http-proxy from npm (the machine's
# Node, as install.sh uses it) -------------------------------------------------------------------
# (Keyed on this checkout too: the venv runs the code of the checkout that installed it.)
stamp="$HUB_VENV/.installed-$JUPYTERHUB_VERSION-$( (cat pyproject.toml; echo "$ROOT") | sha256sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  bash "$ROOT/sandbox/hub-down.sh"  # (a Hub running from the old venv goes with it)
  log "creating $HUB_VENV (JupyterHub $JUPYTERHUB_VERSION, JupyterLab, this project)"
  rm -rf "$HUB_VENV"
  /usr/bin/python3 -m venv "$HUB_VENV"
  "$HUB_VENV/bin/pip" install -q --upgrade pip
  "$HUB_VENV/bin/pip" install -q "jupyterhub==$JUPYTERHUB_VERSION" 'jupyterlab>=4.6,<5' \
    hatchling editables 'hatch-jupyter-builder>=0.5'
  # The project as the single-user servers run it: installed like a user's pip would, but
  # editable, so the Hub runs this checkout's code; its labextension is linked below.
  PATH="$HUB_VENV/bin:$PATH" "$HUB_VENV/bin/pip" install -q --no-build-isolation -e "$ROOT"
  touch "$stamp"
fi
labext="$HUB_VENV/share/jupyter/labextensions/jupyter-hpc-manager"
rm -rf "$labext"
ln -s "$ROOT/jupyter_hpc_manager/labextension" "$labext"
chmod -R a+rX "$HUB_VENV"
if [ ! -x "$CHP_PREFIX/node_modules/.bin/configurable-http-proxy" ]; then
  log "installing configurable-http-proxy $CHP_VERSION"
  npm install -q --prefix "$CHP_PREFIX" --no-audit --no-fund \
    "configurable-http-proxy@$CHP_VERSION" > /dev/null
fi

# --- the users: a password for the Hub, a key of their own for the cluster ---------------------
touch "$SB/hub-passwords"
chmod 600 "$SB/hub-passwords"
for u in "${HUB_USERS[@]}"; do
  # (sandbox/install.sh made the user, before sandbox/up.sh gave it SLURM associations)
  id "$u" > /dev/null 2>&1 || { echo "user $u is missing: run sandbox/install.sh" >&2; exit 1; }
  if ! grep -q "^$u:" "$SB/hub-passwords"; then
    echo "$u:$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')" >> "$SB/hub-passwords"
  fi
  grep "^$u:" "$SB/hub-passwords" | chpasswd
  home=$(getent passwd "$u" | cut -d: -f6)
  install -d -m 700 -o "$u" -g "$u" "$home/.ssh"
  [ -f "$home/.ssh/id_ed25519" ] || runuser -u "$u" -- ssh-keygen -q -t ed25519 -N '' \
    -C "$u on the sandbox Hub" -f "$home/.ssh/id_ed25519"
  pub=$(cat "$home/.ssh/id_ed25519.pub")
  touch "$home/.ssh/authorized_keys"
  grep -qxF "$pub" "$home/.ssh/authorized_keys" || echo "$pub" >> "$home/.ssh/authorized_keys"
  chown "$u:$u" "$home/.ssh/authorized_keys"
  chmod 600 "$home/.ssh/authorized_keys"
done

# --- the one configuration every single-user server reads ---------------------------------------
SSH_ADDR=127.0.0.1 SSH_PORT=2222 cluster_config "$HUB/etc/jupyter_server_config.py" \
  "Written by sandbox/hub-up.sh: one config for every user of the sandbox JupyterHub; no user
# is named: each single-user server logs in to the cluster as its own user, with its own key." \
  "" "~/.ssh/id_ed25519" hub-code 'c.HPCManager.default_mem = "2G"'

# A service token the tests and the bench use to read the Hub's view of its users (activity).
[ -f "$HUB/service-token" ] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$HUB/service-token"
chmod 600 "$HUB/service-token"

cat > "$HUB/jupyterhub_config.py" <<CONF
# Written by sandbox/hub-up.sh.
c = get_config()  # noqa: F821
c.JupyterHub.bind_url = "$HUB_URL"
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.db_url = "sqlite:///$HUB/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "$HUB/jupyterhub_cookie_secret"
c.JupyterHub.pid_file = "$HUB/jupyterhub.pid"
c.ConfigurableHTTPProxy.command = ["$CHP_PREFIX/node_modules/.bin/configurable-http-proxy"]
c.ConfigurableHTTPProxy.pid_file = "$HUB/proxy.pid"
c.JupyterHub.authenticator_class = "pam"
c.Authenticator.allowed_users = {$(printf '"%s", ' "${HUB_USERS[@]}")}
c.JupyterHub.spawner_class = "localprocess"
c.Spawner.cmd = ["$HUB_VENV/bin/jupyterhub-singleuser"]
c.Spawner.default_url = "/lab"
# (Single-user servers report their activity to the Hub every 10 s here, not every 5 min, so
# the tests can watch what the idle culler would see.)
c.Spawner.environment = {"JUPYTER_CONFIG_PATH": "$HUB/etc", "JUPYTERHUB_ACTIVITY_INTERVAL": "10"}
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
c.JupyterHub.services = [{"name": "sandbox-tests", "api_token": open("$HUB/service-token").read().strip()}]
c.JupyterHub.load_roles = [{"name": "sandbox-tests", "services": ["sandbox-tests"],
                            "scopes": ["read:users", "read:servers", "servers", "admin:users"]}]
CONF

if ! alive "$HUB/jupyterhub.pid"; then
  log "starting JupyterHub on $HUB_URL"
  PATH="$HUB_VENV/bin:$PATH" nohup "$HUB_VENV/bin/jupyterhub" -f "$HUB/jupyterhub_config.py" \
    < /dev/null >> "$HUB/hub.log" 2>&1 &
  for _ in $(seq 1 120); do
    curl -fs "$HUB_URL/hub/api/" > /dev/null 2>&1 && break
    sleep 0.5
  done
  curl -fs "$HUB_URL/hub/api/" > /dev/null || { echo "JupyterHub did not start; see $HUB/hub.log" >&2; exit 1; }
fi
log "ready: $HUB_URL (users and passwords in $SB/hub-passwords)"
