"""What every handler of the extension shares (the REST handlers and the IDE proxy): the manager
from the server's settings, the authorization resource, how our errors become an answer's
status and message, and how they are logged."""

from __future__ import annotations

from typing import Any

from jupyter_server.base.handlers import JupyterHandler
from tornado import web

from .errors import HPCError
from .sessions import SessionManager

AUTH_RESOURCE = "hpc"


class HPCHandlerMixin(JupyterHandler):
    auth_resource = AUTH_RESOURCE

    @property
    def manager(self) -> SessionManager:
        manager: SessionManager = self.settings["hpc_manager"]
        return manager

    def error_info(self, status_code: int, kwargs: dict[str, Any]) -> tuple[
            int, str, dict[str, Any]]:
        """(status, message, details) for the error being answered."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, HPCError):
            return self.status_for(exc), exc.message, {"type": exc.kind, **exc.details}
        if isinstance(exc, web.HTTPError):
            message = exc.log_message % exc.args if exc.log_message and exc.args else (
                exc.log_message or exc.reason or self._reason)
            return status_code, message, {}
        return status_code, "Internal server error", {}

    def status_for(self, exc: HPCError) -> int:
        """The HTTP status an error is answered with (the log says the same)."""
        return exc.status_code

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, HPCError):
            status = self.status_for(value)
            level = self.log.warning if status >= 500 else self.log.info
            level("jupyter-hpc-manager: %s %s -> %s %s: %s", self.request.method,
                  self.request.path, status, value.kind, value.message)
        else:
            super().log_exception(typ, value, tb)
