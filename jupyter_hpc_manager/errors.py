"""The one error hierarchy of jupyter-hpc-manager, each class carrying its HTTP status (and
its ``type`` in the error body: the class name, or the contract's own word where it has one).

    HPCError (500)                  base; never raised itself
    ├── ValidationError (400)       bad user input or configuration value
    ├── NotAllowed (403)            SLURM lets only an operator do that (raise a running
    │                               job's time limit)
    ├── NotFoundError (404)         unknown cluster, no session, no such resource
    ├── LockError (429)             a launch or stop already runs on that cluster
    ├── JobError (500)              SLURM refused or lost the job (carries SLURM's message)
    ├── TunnelError (500)           the path to the IDE on the compute node failed
    │   └── IDETimeout (504)        the IDE took longer than ide_timeout to answer or to read
    ├── StateError (500)            the session record could not be saved
    └── SshError (502)              the login node could not be reached or a command failed there
        ├── HostKeyError (502)      the login node's host key is unknown or has changed
        ├── ConnectionLost (502)    the connection died before a command or channel started
        ├── ChannelRefused (502)    the login node refused or did not open a channel (its
        │                           MaxSessions): that one command or request fails, the
        │                           connection stays
        ├── LoginRequired (401)     the login node asks for a password or code: log in first
        └── LoginFailed (401)       an interactive login was refused, expired or has ended

Foreign exceptions (paramiko, socket, SLURM's stderr) are mapped to these once, at the boundary
where they happen, with ``raise ... from exc``; the REST layer turns them into the contract's
error body.
"""

from __future__ import annotations

from typing import Any


class HPCError(Exception):
    """Base of every error this extension raises on purpose."""

    status_code = 500

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    @property
    def kind(self) -> str:
        return type(self).__name__


class ValidationError(HPCError):
    status_code = 400


class NotAllowed(HPCError):
    status_code = 403


class NotFoundError(HPCError):
    status_code = 404


class LockError(HPCError):
    status_code = 429


class JobError(HPCError):
    status_code = 500


class TunnelError(HPCError):
    status_code = 500


class IDETimeout(TunnelError):
    """The IDE did not answer (or take what was sent) within ide_timeout: a hung process, a
    node deep in swap. The proxy answers 504, as nginx would."""

    status_code = 504


class StateError(HPCError):
    status_code = 500


class SshError(HPCError):
    status_code = 502


class HostKeyError(SshError):
    pass


class ConnectionLost(SshError):
    """Nothing ran: the caller may connect again and retry once."""


class ChannelRefused(SshError):
    """The login node refused a new channel (sshd's MaxSessions: "administratively
    prohibited") or did not open it in time, on a connection that is alive: nothing ran."""


class LoginRequired(SshError):
    """The cluster needs an interactive login (a password, a one-time code) from the user before
    anything can run there; we do not try again on our own (a login node counts failures)."""

    status_code = 401
    kind = "login_required"


class LoginFailed(SshError):
    """The login node refused the answers, or the attempt expired or has ended."""

    status_code = 401
    kind = "login_failed"
