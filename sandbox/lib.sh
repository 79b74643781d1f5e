# Shared by the sandbox scripts (sourced, not run).

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_pid() {  # stop_pid PIDFILE NAME [SECONDS]: TERM, wait (15 s), then KILL
  local pidfile=$1 name=$2 wait=${3:-15} pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    echo "[sandbox] stopping $name ($pid)"
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 $((wait * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$pidfile"
}

# cluster_config FILE HEADER USER IDENTITY_FILE JOB_PREFIX [EXTRA]: a Jupyter config naming the
# sandbox's two clusters, gemini and apollo, on its login node, and the MFA clusters (mfa:
# password + code, and with USER set mfakey: key + code, both as $MFA_USER). USER empty: each
# server logs in to gemini and apollo as its own user (as under JupyterHub).
cluster_config() {
  local file=$1 header=$2 user=$3 key=$4 prefix=$5 extra=${6:-}
  cat > "$file" <<CONF
# $header
c = get_config()  # noqa: F821
_common = {
    "host": "$SSH_ADDR",
    "port": $SSH_PORT,$( [ -n "$user" ] && printf '\n    "user": "%s",' "$user")
    "identity_file": "$key",
    "known_hosts": "$SB/known_hosts",
    "partition": "debug",
    "ide_command": "$SANDBOX_PREFIX/bin/code-server",
    # The job's notebook kernels: the ipykernel sandbox/install.sh put there (a site would load
    # a module in the prologue instead).
    "kernel_discovery": "$SANDBOX_PREFIX/kernel-venv/bin/jupyter kernelspec list --json",
}
c.HPCManager.clusters = {
    "gemini": dict(_common, job_name="$prefix-gemini"),
    "apollo": dict(_common, job_name="$prefix-apollo"),
    # Log in from the sidebar: the password in .sandbox/mfa_password, then a code from
    # oathtool --totp -b "\$(cat .sandbox/mfa_totp_secret)".
    "mfa": dict(_common, port=${MFA_PORT:-2223}, user="${MFA_USER:-mfauser}", identity_file="",
                job_name="$prefix-mfa"),$( [ -n "$user" ] && printf '
    # (Its key is readable by the server that runs as root only, so not under the Hub.)
    "mfakey": dict(_common, port=%s, user="%s",
                   identity_file="%s", job_name="%s-mfakey"),' \
      "${MFAKEY_PORT:-2224}" "${MFA_USER:-mfauser}" "$SB/mfauser_ed25519" "$prefix")
}
c.HPCManager.default_hpc = "gemini"
$extra
CONF
  chmod 644 "$file"
}
