"""The sandbox's MFA login nodes (sandbox/up.sh): mfauser's password, and one-time codes computed
here (RFC 6238, as an authenticator app does) from the TOTP secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
import pathlib
import pwd
import struct
import subprocess
import time

from jupyter_process import MFA_USER, SANDBOX

PASSWORD_PORT, KEY_PORT = 2223, 2224
_given: set[int] = set()  # time steps whose code this process has handed out


def secret() -> str:
    return (SANDBOX / "mfa_totp_secret").read_text().strip()


def password() -> str:
    return (SANDBOX / "mfa_password").read_text().strip()


def totp(step: int) -> str:
    key = base64.b32decode(secret() + "=" * (-len(secret()) % 8))
    digest = hmac.new(key, struct.pack(">Q", step), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF
    return f"{value % 1_000_000:06d}"


def _used_steps() -> set[int]:
    """Steps whose code the login node has taken already (it refuses a code twice)."""
    path = f"{pwd.getpwnam(MFA_USER).pw_dir}/.google_authenticator"
    for line in pathlib.Path(path).read_text().splitlines():
        if line.startswith('" DISALLOW_REUSE'):
            return {int(x) for x in line.split()[2:]}
    return set()


def fresh_code() -> str:
    """A code the login node takes now: within its window (WINDOW_SIZE 21: ten steps either
    side) and not used before. Waits for the next 30 s step when all were used."""
    while True:
        now = int(time.time()) // 30
        used = _used_steps() | _given
        for step in range(now - 8, now + 10):  # (each stays in the window for a minute or more)
            if step not in used:
                _given.add(step)
                return totp(step)
        time.sleep(30.5 - time.time() % 30)


def wrong_code() -> str:
    """A code of the right shape that is not valid now."""
    return totp(int(time.time()) // 30 + 50)


def oathtool_code(step: int) -> str:
    """oathtool's code for the step (to check our computation against it)."""
    return subprocess.run(["oathtool", "--totp", "-b", secret(), "-N", f"@{step * 30}"],
                          capture_output=True, text=True, check=True).stdout.strip()


def sshd_log(kind: str) -> str:
    return (SANDBOX / f"sshd-{kind}.log").read_text(errors="replace")


def connections(kind: str) -> int:
    """TCP connections the MFA sshd (mfa or mfakey) has accepted so far."""
    return sshd_log(kind).count("Connection from ")


def drop_connections(kind: str) -> int:
    """Kill the sshd processes of mfauser's connections to one MFA sshd (mfa or mfakey): each
    established connection ends, the listening sshd stays. How many processes were killed."""
    pattern = f"^sshd-{kind}: {MFA_USER}"
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    subprocess.run(["pkill", "-KILL", "-f", pattern], check=False)
    return len(found.split())


def accepted(log: str) -> int:
    """Logins a sandbox sshd (its log file in .sandbox) has accepted so far."""
    return (SANDBOX / log).read_text(errors="replace").count("Accepted publickey for ")
