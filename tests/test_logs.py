"""What the server log tells an admin: launch, switch, stop and every recovery at INFO with the
cluster and the job id, and never the IDE's password."""

from __future__ import annotations

import asyncio
import logging
import subprocess


async def test_operations_and_recoveries_are_logged_without_secrets(api, jp_fetch, manager,
                                                                   caplog, clean_slurm):
    caplog.set_level(logging.INFO)
    code, one = await api("POST", "launch", body={"hpc": "echo1", "mem": "1G"})
    code, two = await api("POST", "launch", body={"hpc": "echo2", "mem": "1G"})
    secrets = [manager.session(h).connection.password for h in ("echo1", "echo2")]
    assert (await jp_fetch("hpc", "code", "small")).code == 200
    await api("POST", "switch", "echo1")
    # A dropped SSH connection, and an IDE that forgot our login: both recovered.
    subprocess.run(["pkill", "-f", "sshd: hpcuser"], check=False)
    await asyncio.sleep(0.5)
    await jp_fetch("hpc", "echo1", "code", "expire")
    assert (await jp_fetch("hpc", "echo1", "code", "small")).code == 200
    await api("POST", "stop", "echo2", body={"cancelJob": True})
    await api("POST", "stop", "echo1", body={})

    info = [r.getMessage() for r in caplog.records
            if r.levelno == logging.INFO and "jupyter-hpc-manager" in r.getMessage()]
    text = "\n".join(info)

    def logged(*words: str) -> bool:
        return any(all(w in line for w in words) for line in info)

    assert logged("submitted job", "echo1", one["jobId"]), text
    assert logged("running session on echo1", one["jobId"]), text
    assert logged("switched to echo1", one["jobId"]), text
    assert logged("stopped echo2", "cancelled job", two["jobId"]), text
    assert logged("stopped echo1", one["jobId"], "keeps running"), text
    assert logged("SSH to", "lost; reconnecting"), text
    assert logged("logging in to VS Code on echo1 again", one["jobId"]), text
    everything = "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records)
    assert len(secrets) == 2 and all(len(x) >= 32 for x in secrets)
    for secret in secrets:
        assert secret not in everything
