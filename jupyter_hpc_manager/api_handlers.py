"""Thin REST handlers for the contract under {base_url}api/hpc/: parse, call the manager, write
JSON. Every method needs Jupyter's authentication and authorization; POSTs keep XSRF checks."""

from __future__ import annotations

import json
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import web

from . import contract
from .base import HPCHandlerMixin
from .errors import NotFoundError, ValidationError

MAX_BODY_BYTES = 64 * 1024


class HPCAPIHandler(HPCHandlerMixin, APIHandler):
    """Base: JSON bodies in and out, and the contract's error body."""

    def json_body(self) -> dict[str, Any]:
        raw = self.request.body
        if not raw:
            return {}  # no body: the defaults (whitespace alone is not JSON, and is refused)
        if len(raw) > MAX_BODY_BYTES:
            raise ValidationError(f"Request body is too large (over {MAX_BODY_BYTES} bytes)")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValidationError("Request body is not valid JSON") from exc
        if not isinstance(body, dict):
            raise ValidationError("Request body must be a JSON object")
        return body

    def write_json(self, payload: dict[str, Any]) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(payload))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        status_code, message, details = self.error_info(status_code, kwargs)
        self.set_status(status_code)
        if status_code == 405:  # RFC 9110: say which methods there are
            self.set_header("Allow", ", ".join(
                m for m in self.SUPPORTED_METHODS
                if getattr(type(self), m.lower(), None) is not getattr(web.RequestHandler,
                                                                       m.lower(), None)))
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(contract.error_body(message, details)))


def refresh_argument(handler: HPCAPIHandler) -> bool:
    refresh = handler.get_query_argument("refresh", "false")
    if refresh not in ("true", "false"):
        raise ValidationError("Invalid refresh value: must be true or false",
                              {"field": "refresh"})
    return refresh == "true"


class ReadHandler(HPCAPIHandler):
    """Reads (the panel polls them): not the user's activity, so an open tab alone does not keep
    a server from JupyterHub's idle culler. Launch, switch and stop are."""

    _track_activity = False


class HealthHandler(ReadHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.write_json({"status": "ok"})


class ClusterStatusHandler(ReadHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        board = await self.manager.board(refresh=refresh_argument(self))
        self.write_json(contract.cluster_status(board, self.manager.config.cache_ttl))


class StatusHandler(ReadHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        # From memory, never waiting; refresh asks SLURM what the clusters offer, for a later call.
        board = self.manager.status(refresh=refresh_argument(self))
        self.write_json(contract.status(board, self.manager.config))


class LaunchHandler(HPCAPIHandler):
    @web.authenticated
    @authorized
    async def post(self) -> None:
        self.write_json(contract.launch_reply(await self.manager.launch(self.json_body())))


class CheckLaunchHandler(ReadHandler):
    """A launch's checks without the launch (not activity: the sidebar asks as the user types)."""

    @web.authenticated
    @authorized
    async def post(self) -> None:
        self.write_json(contract.launch_check(await self.manager.check_launch(self.json_body())))


class SwitchHandler(HPCAPIHandler):
    @web.authenticated
    @authorized
    async def post(self, hpc: str) -> None:
        self.write_json(contract.switch_reply(await self.manager.switch(hpc)))


class StopHandler(HPCAPIHandler):
    @web.authenticated
    @authorized
    async def post(self, hpc: str | None = None) -> None:
        self.write_json(contract.stop_reply(await self.manager.stop(hpc, self.json_body())))


class KeepHandler(HPCAPIHandler):
    """The user keeps a running session that idle auto-cancel would end."""

    @web.authenticated
    @authorized
    async def post(self, hpc: str) -> None:
        self.write_json(contract.keep_reply(await self.manager.keep(hpc)))


class TimeHandler(HPCAPIHandler):
    """A new time limit for a cluster's job, as SLURM lets its owner set it."""

    @web.authenticated
    @authorized
    async def post(self, hpc: str) -> None:
        outcome = await self.manager.change_time(hpc, self.json_body())
        self.write_json(contract.time_reply(outcome))


class LoginHandler(HPCAPIHandler):
    """Start a login to a cluster that asks for a password or code, or answer its prompts.
    The body holds answers: it is never logged (errors name the field, not the value)."""

    @web.authenticated
    @authorized
    async def post(self, hpc: str) -> None:
        self.write_json(contract.login_reply(await self.manager.login(hpc, self.json_body())))


class LogoutHandler(HPCAPIHandler):
    @web.authenticated
    @authorized
    async def post(self, hpc: str) -> None:
        self.write_json(contract.login_reply(await self.manager.logout(hpc)))


class NotFoundHandler(HPCAPIHandler):
    """Any other path under api/hpc/: a JSON 404 naming it, after the same auth checks."""

    @web.authenticated
    @authorized
    async def get(self, path: str) -> None:
        raise NotFoundError(f"No such endpoint: {self.request.method} api/hpc/{path}")

    post = put = delete = patch = get


# Relative routes; the ExtensionApp joins them to base_url. Path parameters take anything but a
# slash, so a bad cluster name reaches validation and gets the contract's 400, not a bare 404.
handlers: list[tuple[str, type[HPCAPIHandler]]] = [
    (r"api/hpc/health", HealthHandler),
    (r"api/hpc/cluster-status", ClusterStatusHandler),
    (r"api/hpc/status", StatusHandler),
    (r"api/hpc/launch", LaunchHandler),
    (r"api/hpc/check-launch", CheckLaunchHandler),
    (r"api/hpc/switch/([^/]+)", SwitchHandler),
    (r"api/hpc/stop", StopHandler),
    (r"api/hpc/stop/([^/]+)", StopHandler),
    (r"api/hpc/keep/([^/]+)", KeepHandler),
    (r"api/hpc/time/([^/]+)", TimeHandler),
    (r"api/hpc/login/([^/]+)", LoginHandler),
    (r"api/hpc/logout/([^/]+)", LogoutHandler),
    (r"api/hpc/(.*)", NotFoundHandler),
]
