"""Load against the real sandbox: many launches at once make one job, many status calls make one
squeue per cluster, and 20 websockets through the proxy stay healthy for 20 s of traffic (a
longer soak belongs in bench/)."""

from __future__ import annotations

import asyncio
import time

from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from conftest import squeue_calls
from jupyter_process import slurm_jobs


async def test_50_concurrent_launches_make_exactly_one_job(api, manager, clean_slurm):
    results = await asyncio.gather(*(
        api("POST", "launch", body={"hpc": "echo1", "mem": "1G"}) for _ in range(50)))
    codes = [code for code, _ in results]
    assert codes.count(200) == 1 and codes.count(429) == 49, sorted(set(codes))
    assert len(slurm_jobs()) == 1
    assert manager.commands["sbatch"] == 1
    # Once it is done, launches reconnect to the same job.
    again = await asyncio.gather(*(api("POST", "launch", body={"hpc": "echo1"})
                                   for _ in range(5)))
    ok = [r for code, r in again if code == 200]
    assert ok and all(r["status"] == "connected" for r in ok)
    assert len(slurm_jobs()) == 1


async def test_200_concurrent_status_calls_make_one_squeue_per_cluster(api, cluster_tmp):
    before = {name: squeue_calls(cluster_tmp, f"test-hpc-{name}") for name in ("gemini", "echo1")}
    results = await asyncio.gather(*(api("GET", "cluster-status") for _ in range(200)))
    assert {code for code, _ in results} == {200}
    for name, n in before.items():
        assert squeue_calls(cluster_tmp, f"test-hpc-{name}") == n + 1, name
    assert len({r["updatedAt"] for _, r in results}) == 1  # one answer, shared


async def test_20_websockets_through_the_proxy_stay_healthy(
        api, manager, jp_http_port, jp_base_url, jp_auth_header, clean_slurm):
    code, reply = await api("POST", "launch", body={"hpc": "echo1", "mem": "1G"})
    assert code == 200, reply
    url = f"ws://127.0.0.1:{jp_http_port}{jp_base_url}hpc/echo1/code/ws"
    sockets = await asyncio.gather(*(
        websocket_connect(HTTPRequest(url, headers=dict(jp_auth_header)),
                          subprotocols=["echo-protocol"]) for _ in range(20)))
    assert all(ws.selected_subprotocol == "echo-protocol" for ws in sockets)
    assert manager.session("echo1").ide.tunnel.connections >= 20
    sent = received = 0
    deadline = time.monotonic() + 20
    round_ = 0
    while time.monotonic() < deadline:
        round_ += 1
        for i, ws in enumerate(sockets):
            payload = f"{i}:{round_}" if round_ % 2 else f"{i}:{round_}".encode() * 1000
            await ws.write_message(payload, binary=isinstance(payload, bytes))
            sent += 1
            echoed = await asyncio.wait_for(ws.read_message(), timeout=10)
            assert echoed == payload, (i, round_)
            received += 1
        await asyncio.sleep(1)
    assert sent == received >= 20 * 10
    for ws in sockets:
        assert ws.close_code is None  # none was dropped
        ws.close()
