#!/usr/bin/env bash
# Starts the sandbox cluster (idempotent), as root: OpenSSH sshd on 127.0.0.1:2222 as the login
# node, munge + a single-node SLURM, and writes .sandbox/jupyter_server_config.py naming two
# clusters (gemini, apollo) on it with the host key pinned. sandbox/install.sh must have run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SB="$ROOT/.sandbox"
SANDBOX_PREFIX=${SANDBOX_PREFIX:-/opt/jupyter-hpc-sandbox}
SANDBOX_USER=${SANDBOX_USER:-hpcuser}
SSH_ADDR=${SANDBOX_SSH_ADDR:-127.0.0.1}
SSH_PORT=${SANDBOX_SSH_PORT:-2222}
# A second sshd, on another loopback address, as a jump host (ProxyJump) in front of the first.
JUMP_ADDR=${SANDBOX_JUMP_ADDR:-127.0.0.2}
# The sandbox JupyterHub's users (sandbox/hub-up.sh) log in to the same login node as themselves.
HUB_USERS=${SANDBOX_HUB_USERS:-alice bob}
NODE=$(hostname -s)

log() { printf '[sandbox-up] %s\n' "$*"; }
. sandbox/lib.sh

mkdir -p "$SB" "$SB/bin"
chmod 755 "$SB"
user_home=$(getent passwd "$SANDBOX_USER" | cut -d: -f6)

# --- keys -------------------------------------------------------------------------------------
[ -f "$SB/hpcuser_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C "jupyter-hpc-sandbox" -f "$SB/hpcuser_ed25519"
[ -f "$SB/ssh_host_ed25519_key" ] || ssh-keygen -q -t ed25519 -N '' -C "sandbox-login-node" -f "$SB/ssh_host_ed25519_key"
chmod 600 "$SB/hpcuser_ed25519" "$SB/ssh_host_ed25519_key"
install -d -m 700 -o "$SANDBOX_USER" -g "$SANDBOX_USER" "$user_home/.ssh"
pub=$(cat "$SB/hpcuser_ed25519.pub")
touch "$user_home/.ssh/authorized_keys"
grep -qxF "$pub" "$user_home/.ssh/authorized_keys" || echo "$pub" >> "$user_home/.ssh/authorized_keys"
chown "$SANDBOX_USER:$SANDBOX_USER" "$user_home/.ssh/authorized_keys"
chmod 600 "$user_home/.ssh/authorized_keys"
hostkey=$(cut -d' ' -f1,2 "$SB/ssh_host_ed25519_key.pub")
printf '[%s]:%s %s\n[%s]:%s %s\n' "$SSH_ADDR" "$SSH_PORT" "$hostkey" "$JUMP_ADDR" "$SSH_PORT" "$hostkey" \
  > "$SB/known_hosts"

# --- sshd: the login node -----------------------------------------------------------------------
cat > "$SB/sshd_config" <<CONF
ListenAddress $SSH_ADDR:$SSH_PORT
HostKey $SB/ssh_host_ed25519_key
PidFile $SB/sshd.pid
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin no
# (sshd reads this file again for every connection: a change needs no restart.)
AllowUsers $SANDBOX_USER $HUB_USERS
AuthorizedKeysFile .ssh/authorized_keys
AllowTcpForwarding yes
X11Forwarding no
PrintMotd no
LogLevel VERBOSE
MaxStartups 100:30:200
MaxSessions 200
CONF
mkdir -p /run/sshd
if ! alive "$SB/sshd.pid"; then
  log "starting sshd on $SSH_ADDR:$SSH_PORT"
  /usr/sbin/sshd -t -f "$SB/sshd_config"
  /usr/sbin/sshd -f "$SB/sshd_config" -E "$SB/sshd.log"
  for _ in $(seq 1 50); do alive "$SB/sshd.pid" && break; sleep 0.1; done
  alive "$SB/sshd.pid" || { echo "sshd did not start; see $SB/sshd.log" >&2; exit 1; }
fi
sed -e "s/^ListenAddress .*/ListenAddress $JUMP_ADDR:$SSH_PORT/" \
    -e "s|^PidFile .*|PidFile $SB/sshd-jump.pid|" "$SB/sshd_config" > "$SB/sshd_jump_config"
if ! alive "$SB/sshd-jump.pid"; then
  log "starting the jump host's sshd on $JUMP_ADDR:$SSH_PORT"
  /usr/sbin/sshd -f "$SB/sshd_jump_config" -E "$SB/sshd-jump.log"
  for _ in $(seq 1 50); do alive "$SB/sshd-jump.pid" && break; sleep 0.1; done
  alive "$SB/sshd-jump.pid" || { echo "jump sshd did not start; see $SB/sshd-jump.log" >&2; exit 1; }
fi

# --- munge ----------------------------------------------------------------------------------------
mkdir -p /run/munge
chown munge:munge /run/munge
chmod 755 /run/munge
if ! alive /run/munge/munged.pid; then
  log "starting munged"
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 1 50); do alive /run/munge/munged.pid && break; sleep 0.1; done
fi

# --- SLURM ----------------------------------------------------------------------------------------
mkdir -p /etc/slurm /run/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm
conf=$(cat <<CONF
# Written by jupyter-hpc-manager's sandbox/up.sh: a single-node cluster for tests and the demo.
ClusterName=sandbox
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SlurmdParameters=config_overrides
JobCompType=jobcomp/filetxt
JobCompLoc=/var/log/slurm/jobcomp.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
KillWait=5
SchedulerParameters=sched_interval=2
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=16 RealMemory=200000 State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF
)
restart=0
if [ "$(cat /etc/slurm/slurm.conf 2>/dev/null)" != "$conf" ]; then
  printf '%s\n' "$conf" > /etc/slurm/slurm.conf
  restart=1
fi
if [ "$restart" = 1 ] && alive /run/slurm/slurmctld.pid; then
  log "slurm.conf changed: restarting SLURM"
  bash "$ROOT/sandbox/down.sh" --slurm-only
fi
if ! alive /run/slurm/slurmctld.pid; then
  log "starting slurmctld"
  /usr/sbin/slurmctld
fi
touch /var/log/slurm/jobcomp.log; chmod 666 /var/log/slurm/jobcomp.log
if ! alive /run/slurm/slurmd.pid; then
  log "starting slurmd"
  /usr/sbin/slurmd
fi
state=
for _ in $(seq 1 60); do
  state=$(sinfo -h -n "$NODE" -o '%t' 2>/dev/null || true)
  case "$state" in
    idle*|mix*|alloc*) break ;;
    down*|drain*|drng*) scontrol update nodename="$NODE" state=resume 2>/dev/null || true ;;
  esac
  sleep 0.5
done
case "$state" in
  idle*|mix*|alloc*) log "SLURM node $NODE is $state" ;;
  *) echo "SLURM node $NODE did not come up (state '$state'); see /var/log/slurm/" >&2; exit 1 ;;
esac

# --- the Jupyter configuration for the sandbox ---------------------------------------------------
cluster_config "$SB/jupyter_server_config.py" \
  "Written by sandbox/up.sh: two clusters, gemini and apollo, both on the sandbox login node." \
  "$SANDBOX_USER" "$SB/hpcuser_ed25519" hpc-code
log "ready: ssh $SANDBOX_USER@$SSH_ADDR -p $SSH_PORT -i $SB/hpcuser_ed25519; config in $SB/jupyter_server_config.py"
