#!/usr/bin/env bash
# Starts the sandbox cluster (idempotent), as root: OpenSSH sshd on 127.0.0.1:2222 as the login
# node (and on 127.0.0.2:2222 as a jump host), two MFA login nodes (127.0.0.1:2223 password + TOTP,
# :2224 key + TOTP), munge + a single-node SLURM (16 CPUs, 2 GPUs; partitions debug, gpu, long), and writes .sandbox/jupyter_server_config.py
# naming the clusters gemini and apollo (keys), mfa and mfakey, all with the host key pinned.
# sandbox/install.sh must have run.
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
# Login nodes that ask for a one-time code (TOTP), for the cluster user MFA_USER.
MFA_USER=${SANDBOX_MFA_USER:-mfauser}
MFA_PORT=${SANDBOX_MFA_PORT:-2223}
MFAKEY_PORT=${SANDBOX_MFAKEY_PORT:-2224}
NODE=$(hostname -s)
GPU_NODE=${NODE}-gpu

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

# --- MFA login nodes ------------------------------------------------------------------------------
# Two more sshds for the cluster user $MFA_USER, each asking for a TOTP code through PAM
# (libpam-google-authenticator): on $MFA_PORT the Unix password then the code
# (keyboard-interactive only); on $MFAKEY_PORT the user's key then the code. sshd takes its PAM
# service from its program name, so each runs through a symlink with a PAM file of its own and the
# system's sshd stack stays untouched.
mfa_home=$(getent passwd "$MFA_USER" | cut -d: -f6)
if [ ! -s "$SB/mfa_totp_secret" ]; then
  head -c 20 /dev/urandom | base32 | tr -d '=\n' > "$SB/mfa_totp_secret"; echo >> "$SB/mfa_totp_secret"
fi
if [ ! -s "$SB/mfa_password" ]; then
  head -c 18 /dev/urandom | base64 | tr -d '/+=\n' > "$SB/mfa_password"; echo >> "$SB/mfa_password"
fi
chmod 600 "$SB/mfa_totp_secret" "$SB/mfa_password"
printf '%s:%s\n' "$MFA_USER" "$(head -n1 "$SB/mfa_password")" | chpasswd
secret=$(head -n1 "$SB/mfa_totp_secret")
# A used code is refused again (DISALLOW_REUSE), as at real sites; the clock is trusted
# (noskewadj: the module does not shift its window after codes from another time, which the
# tests' wrong codes would otherwise teach it). The window is wider than an app's usual 3 steps
# (21, the most it takes: ten 30 s steps either side) so that the tests, which log in many times
# a minute, each find an unused code at once. The module rewrites this file (rate limit, used
# codes): keep its state unless the secret or the options changed.
if [ "$(head -n1 "$mfa_home/.google_authenticator" 2>/dev/null)" != "$secret" ] \
   || ! grep -qx '" WINDOW_SIZE 21' "$mfa_home/.google_authenticator" \
   || grep -q TIME_SKEW "$mfa_home/.google_authenticator"; then
  rm -f "$mfa_home/.google_authenticator"
  printf '%s\n" TOTP_AUTH\n" WINDOW_SIZE 21\n" RATE_LIMIT 30 30\n" DISALLOW_REUSE\n' "$secret" \
    > "$mfa_home/.google_authenticator"
fi
chown "$MFA_USER:$MFA_USER" "$mfa_home/.google_authenticator"
chmod 400 "$mfa_home/.google_authenticator"
[ -f "$SB/mfauser_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C "jupyter-hpc-sandbox-mfa" -f "$SB/mfauser_ed25519"
chmod 600 "$SB/mfauser_ed25519"
install -d -m 700 -o "$MFA_USER" -g "$MFA_USER" "$mfa_home/.ssh"
install -m 600 -o "$MFA_USER" -g "$MFA_USER" "$SB/mfauser_ed25519.pub" "$mfa_home/.ssh/authorized_keys"
printf '[%s]:%s %s\n[%s]:%s %s\n' "$SSH_ADDR" "$MFA_PORT" "$hostkey" "$SSH_ADDR" "$MFAKEY_PORT" "$hostkey" \
  >> "$SB/known_hosts"
cat > /etc/pam.d/sshd-mfa <<PAM
# Written by jupyter-hpc-manager's sandbox/up.sh: the Unix password, then a TOTP code.
auth required pam_unix.so
auth required pam_google_authenticator.so noskewadj
account include common-account
session include common-session
PAM
cat > /etc/pam.d/sshd-mfakey <<PAM
# Written by jupyter-hpc-manager's sandbox/up.sh: after the key (sshd), a TOTP code.
auth required pam_google_authenticator.so noskewadj
account include common-account
session include common-session
PAM
for kind in mfa mfakey; do
  if [ "$kind" = mfa ]; then port=$MFA_PORT; methods=keyboard-interactive
  else port=$MFAKEY_PORT; methods=publickey,keyboard-interactive; fi
  ln -sf /usr/sbin/sshd "$SANDBOX_PREFIX/bin/sshd-$kind"
  sed -e "s/^ListenAddress .*/ListenAddress $SSH_ADDR:$port/" \
      -e "s|^PidFile .*|PidFile $SB/sshd-$kind.pid|" \
      -e "s/^UsePAM .*/UsePAM yes/" \
      -e "s/^KbdInteractiveAuthentication .*/KbdInteractiveAuthentication yes/" \
      -e "s/^AllowUsers .*/AllowUsers $MFA_USER/" \
      -e "s/^LogLevel .*/LogLevel DEBUG1/" \
      "$SB/sshd_config" > "$SB/sshd_${kind}_config"
  printf 'AuthenticationMethods %s\n' "$methods" >> "$SB/sshd_${kind}_config"
  if ! alive "$SB/sshd-$kind.pid"; then
    log "starting the MFA login node ($methods) on $SSH_ADDR:$port"
    "$SANDBOX_PREFIX/bin/sshd-$kind" -t -f "$SB/sshd_${kind}_config"
    "$SANDBOX_PREFIX/bin/sshd-$kind" -f "$SB/sshd_${kind}_config" -E "$SB/sshd-$kind.log"
    for _ in $(seq 1 50); do alive "$SB/sshd-$kind.pid" && break; sleep 0.1; done
    alive "$SB/sshd-$kind.pid" || { echo "sshd-$kind did not start; see $SB/sshd-$kind.log" >&2; exit 1; }
  fi
done

# --- munge ----------------------------------------------------------------------------------------
mkdir -p /run/munge
chown munge:munge /run/munge
chmod 755 /run/munge
if ! alive /run/munge/munged.pid; then
  log "starting munged"
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 1 50); do alive /run/munge/munged.pid && break; sleep 0.1; done
fi

# --- SLURM's accounting: MariaDB and slurmdbd --------------------------------------------------
# Accounts and QOS are real: sacctmgr lists a user's, and sbatch refuses others
# (AccountingStorageEnforce). MariaDB listens on 127.0.0.1 and its socket only.
mkdir -p /etc/slurm /run/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm
install -d -o mysql -g mysql /run/mysqld
if ! alive /run/mysqld/mysqld.pid; then
  log "starting MariaDB (SLURM's accounting database)"
  runuser -u mysql -- /usr/sbin/mariadbd --pid-file=/run/mysqld/mysqld.pid \
    --bind-address=127.0.0.1 --log-error=/var/log/slurm/mariadb.log >/dev/null 2>&1 &
  for _ in $(seq 1 100); do mariadb -e 'select 1' >/dev/null 2>&1 && break; sleep 0.2; done
  mariadb -e 'select 1' >/dev/null || { echo "MariaDB did not start; see /var/log/slurm/mariadb.log" >&2; exit 1; }
fi
[ -s "$SB/slurmdbd_password" ] || { head -c 18 /dev/urandom | base64 | tr -d '/+=\n' > "$SB/slurmdbd_password"; }
chmod 600 "$SB/slurmdbd_password"
dbpass=$(cat "$SB/slurmdbd_password")
mariadb <<SQL
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$dbpass';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$dbpass';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
SQL
dbd_conf=$(cat <<CONF
# Written by jupyter-hpc-manager's sandbox/up.sh.
AuthType=auth/munge
DbdAddr=127.0.0.1
DbdHost=localhost
DbdPort=6819
SlurmUser=root
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurm/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=$dbpass
CONF
)
if [ "$(cat /etc/slurm/slurmdbd.conf 2>/dev/null)" != "$dbd_conf" ]; then
  printf '%s\n' "$dbd_conf" > /etc/slurm/slurmdbd.conf
  stop_pid /run/slurm/slurmdbd.pid slurmdbd
fi
chmod 600 /etc/slurm/slurmdbd.conf
if ! alive /run/slurm/slurmdbd.pid; then
  log "starting slurmdbd"
  /usr/sbin/slurmdbd
  for _ in $(seq 1 100); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.2; done
fi
# The cluster, two accounts, a QOS, and every sandbox user in both accounts. (Each add may
# fail quietly when it exists already; on a fresh database one can also fail while slurmdbd
# settles: the whole set is tried again until every user has both accounts.)
add_accounts() {
  sacctmgr -i -Q add cluster sandbox >/dev/null 2>&1 || true
  sacctmgr -i -Q add account proj-a,proj-b cluster=sandbox \
    description="sandbox project" organization=sandbox >/dev/null 2>&1 || true
  sacctmgr -i -Q add qos interactive >/dev/null 2>&1 || true
  for u in root "$SANDBOX_USER" "$MFA_USER" $HUB_USERS; do
    sacctmgr -i -Q add user "$u" account=proj-a,proj-b defaultaccount=proj-a cluster=sandbox \
      >/dev/null 2>&1 || true
    sacctmgr -i -Q modify user "$u" set qos=normal,interactive defaultqos=normal >/dev/null 2>&1 \
      || true
  done
}
accounts_ok() {
  local u have
  for u in root "$SANDBOX_USER" "$MFA_USER" $HUB_USERS; do
    have=$(sacctmgr -n -P list assoc user="$u" format=account 2>/dev/null)
    grep -qx proj-a <<<"$have" && grep -qx proj-b <<<"$have" || return 1
  done
}
for _ in $(seq 1 30); do
  add_accounts
  accounts_ok && break
  sleep 1
done
accounts_ok || { echo "SLURM accounts could not be made; see /var/log/slurm/slurmdbd.log" >&2; exit 1; }

# --- SLURM ----------------------------------------------------------------------------------------
conf=$(cat <<CONF
# Written by jupyter-hpc-manager's sandbox/up.sh: a single-node cluster for tests and the demo.
ClusterName=sandbox
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd/%n
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd-%n.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd-%n.log
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
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
AccountingStorageEnforce=associations,limits,qos
JobAcctGatherType=jobacct_gather/none
KillWait=5
# The backfill scheduler estimates when pending jobs start (squeue %S); every 5 s here.
SchedulerParameters=sched_interval=2,bf_interval=5
# Two nodes on this one machine, each its own slurmd on its own loopback address and port: the
# CPU node, and a GPU node with two GPUs. SLURM drops GPUs without device files, so gres.conf
# names two stand-ins (character devices like /dev/null): SLURM allocates and accounts them like
# real ones (CUDA_VISIBLE_DEVICES, squeue, sinfo); nothing in the sandbox computes on them.
GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 Port=6818 CPUs=16 RealMemory=200000 State=UNKNOWN
NodeName=$GPU_NODE NodeHostname=$NODE NodeAddr=127.0.0.3 Port=6820 CPUs=16 RealMemory=200000 Gres=gpu:tesla:2 State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=12:00:00 State=UP
PartitionName=gpu Nodes=$GPU_NODE MaxTime=1-00:00:00 State=UP
PartitionName=long Nodes=$NODE MaxTime=2-00:00:00 State=UP
CONF
)
gpu_dir=/var/lib/slurm/sandbox-gpus
mkdir -p "$gpu_dir"
for i in 0 1; do [ -c "$gpu_dir/gpu$i" ] || mknod -m 666 "$gpu_dir/gpu$i" c 1 3; done
gres="NodeName=$GPU_NODE Name=gpu Type=tesla File=$gpu_dir/gpu[0-1]"
restart=0
if [ "$(cat /etc/slurm/slurm.conf 2>/dev/null)" != "$conf" ]; then
  printf '%s\n' "$conf" > /etc/slurm/slurm.conf
  restart=1
fi
if [ "$(cat /etc/slurm/gres.conf 2>/dev/null)" != "$gres" ]; then
  printf '%s\n' "$gres" > /etc/slurm/gres.conf
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
for n in "$NODE" "$GPU_NODE"; do
  mkdir -p "/var/lib/slurm/slurmd/$n"
  if ! alive "/run/slurm/slurmd-$n.pid"; then
    log "starting slurmd for node $n"
    /usr/sbin/slurmd -N "$n"
  fi
done
for n in "$NODE" "$GPU_NODE"; do
  state=
  for _ in $(seq 1 60); do
    state=$(sinfo -h -n "$n" -o '%t' 2>/dev/null || true)
    case "$state" in
      idle*|mix*|alloc*) break ;;
      down*|drain*|drng*|inval*) scontrol update nodename="$n" state=resume 2>/dev/null || true ;;
    esac
    sleep 0.5
  done
  case "$state" in
    idle*|mix*|alloc*) log "SLURM node $n is $state" ;;
    *) echo "SLURM node $n did not come up (state '$state'); see /var/log/slurm/" >&2; exit 1 ;;
  esac
done

# --- the Jupyter configuration for the sandbox ---------------------------------------------------
cluster_config "$SB/jupyter_server_config.py" \
  "Written by sandbox/up.sh: clusters gemini and apollo on the sandbox login node; mfa and mfakey on its MFA login nodes." \
  "$SANDBOX_USER" "$SB/hpcuser_ed25519" hpc-code
log "ready: ssh $SANDBOX_USER@$SSH_ADDR -p $SSH_PORT -i $SB/hpcuser_ed25519; config in $SB/jupyter_server_config.py"
