"""Thin REST handlers for the contract under {base_url}api/hpc/: parse, call the manager, write
JSON. Every method needs Jupyter's authentication and authorization; POSTs keep XSRF checks."""

from __future__ import annotations

import json
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import web

from .errors import HPCError, NotFoundError, ValidationError
from .sessions import SessionManager, utcnow_iso

AUTH_RESOURCE = "hpc"
MAX_BODY_BYTES = 64 * 1024


class HPCAPIHandler(APIHandler):
    """Base: the manager from settings, JSON bodies, and the contract's error body."""

    auth_resource = AUTH_RESOURCE

    @property
    def manager(self) -> SessionManager:
        manager: SessionManager = self.settings["hpc_manager"]
        return manager

    def json_body(self) -> dict[str, Any]:
        raw = self.request.body
        if not raw or not raw.strip():
            return {}
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
        """The contract's error body: error, details, timestamp (plus message, which
        JupyterLab's ServerConnection.ResponseError reads)."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        details: dict[str, Any] = {}
        if isinstance(exc, HPCError):
            status_code = exc.status_code
            self.set_status(status_code)
            message = exc.message
            details = {"type": exc.kind, **exc.details}
        elif isinstance(exc, web.HTTPError):
            message = exc.log_message % exc.args if exc.log_message and exc.args else (
                exc.log_message or exc.reason or self._reason)
        else:
            message = "Internal server error"
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({
            "error": message,
            "message": message,
            "details": details,
            "timestamp": utcnow_iso(),
        }))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, HPCError):
            level = self.log.warning if value.status_code >= 500 else self.log.info
            level("jupyter-hpc-manager: %s %s -> %s %s: %s", self.request.method,
                  self.request.path, value.status_code, value.kind, value.message)
        else:
            super().log_exception(typ, value, tb)


class HealthHandler(HPCAPIHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.write_json({"status": "ok"})


class ClusterStatusHandler(HPCAPIHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        refresh = self.get_query_argument("refresh", "false").lower() in ("true", "1", "yes")
        self.write_json(await self.manager.cluster_status(refresh=refresh))


class StatusHandler(HPCAPIHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.write_json(self.manager.status())


class LaunchHandler(HPCAPIHandler):
    @web.authenticated
    @authorized
    async def post(self) -> None:
        self.write_json(await self.manager.launch(self.json_body()))


class SwitchHandler(HPCAPIHandler):
    @web.authenticated
    @authorized
    async def post(self, hpc: str) -> None:
        self.write_json(await self.manager.switch(hpc))


class StopHandler(HPCAPIHandler):
    @web.authenticated
    @authorized
    async def post(self, hpc: str | None = None) -> None:
        self.write_json(await self.manager.stop(hpc, self.json_body()))


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
    (r"api/hpc/switch/([^/]+)", SwitchHandler),
    (r"api/hpc/stop", StopHandler),
    (r"api/hpc/stop/([^/]+)", StopHandler),
    (r"api/hpc/(.*)", NotFoundHandler),
]
