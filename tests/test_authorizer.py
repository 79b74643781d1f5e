"""A JupyterHub-style authorizer that lets a user see the REST API but not use the IDE: the
proxy obeys it for every method, before anything is sent to the IDE (bodies stream, so the
check cannot wait for the body to arrive)."""

from __future__ import annotations

import pytest
from jupyter_server.auth.authorizer import Authorizer


class NoIDE(Authorizer):
    def is_authorized(self, handler, user, action, resource):
        return not (resource == "hpc" and action == "execute")


@pytest.fixture
def jp_server_config(jp_server_config):
    jp_server_config["ServerApp"]["authorizer_class"] = NoIDE
    return jp_server_config


async def test_an_authorizer_that_denies_the_ide_is_obeyed_before_anything_is_sent(
        jp_fetch, api, manager, clean_slurm):
    code, reply = await api("POST", "launch", body={"hpc": "echo1", "mem": "1G"})
    assert code == 200  # the REST API (read/write) is allowed
    tunnel = manager.session("echo1").ide.tunnel
    opened = tunnel.opened
    for method, body in (("GET", None), ("POST", b"x" * 100_000), ("PUT", b"y"),
                         ("DELETE", None)):
        r = await jp_fetch("hpc", "echo1", "code", "echo", method=method, body=body,
                           raise_error=False, allow_nonstandard_methods=True)
        assert r.code == 403, (method, r.code)
    assert tunnel.opened == opened  # nothing reached the IDE
