#!/usr/bin/env bash
# Stops what sandbox/up.sh started, by pid: the sandbox user's jobs first (their slurmstepd
# outlives slurmd), then slurmd, slurmctld, munged and sshd. --slurm-only leaves munge and sshd.
set -uo pipefail
cd "$(dirname "$0")/.."
SB="$(pwd)/.sandbox"
SANDBOX_USER=${SANDBOX_USER:-hpcuser}
MFA_USER=${SANDBOX_MFA_USER:-mfauser}

. sandbox/lib.sh

if [ -f /run/slurm/slurmctld.pid ] && kill -0 "$(cat /run/slurm/slurmctld.pid)" 2>/dev/null; then
  scancel -u "$SANDBOX_USER" 2>/dev/null; scancel -u "$MFA_USER" 2>/dev/null
  for _ in $(seq 1 40); do
    [ -z "$(squeue -h -u "$SANDBOX_USER,$MFA_USER" 2>/dev/null)" ] && break; sleep 0.25
  done
fi
for pidfile in /run/slurm/slurmd-*.pid /run/slurm/slurmd.pid; do
  stop_pid "$pidfile" "slurmd ($(basename "$pidfile" .pid))"
done
stop_pid /run/slurm/slurmctld.pid slurmctld
[ "${1:-}" = "--slurm-only" ] && exit 0
stop_pid /run/slurm/slurmdbd.pid slurmdbd
stop_pid /run/mysqld/mysqld.pid "MariaDB"
stop_pid /run/munge/munged.pid munged
stop_pid "$SB/sshd.pid" sshd
stop_pid "$SB/sshd-jump.pid" "sshd (jump host)"
stop_pid "$SB/sshd-mfa.pid" "sshd (MFA, password + code)"
stop_pid "$SB/sshd-mfakey.pid" "sshd (MFA, key + code)"
exit 0
