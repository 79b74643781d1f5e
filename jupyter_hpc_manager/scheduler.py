"""The scheduler client of one cluster: SLURM's commands (squeue, sinfo, sacctmgr, sbatch,
scancel) and the job's files (the connection file, the log's tail), run on the login node. The
command lines and their parsing are slurm.py's (pure); here they are run and their failures
become our errors (JobError for what SLURM refused or printed badly)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shlex
from collections.abc import Iterable
from typing import Any

from . import slurm
from .config import ClusterConfig
from .errors import HPCError, JobError, SshError
from .login_node import LoginNode
from .models import Connection, Offer
from .slurm import JobRequest, SqueueJob

_SAFE_HOST = re.compile(r"^[A-Za-z0-9_.:-]{1,255}$")


class SubmitFailed(JobError):
    """sbatch failed or did not answer, and no job with the launch's token showed up within
    the bound: nothing was queued, as far as SLURM lets us see."""


class Scheduler:
    def __init__(self, config: ClusterConfig, node: LoginNode, log: logging.Logger) -> None:
        self.name = config.name
        self.config = config
        self.node = node
        self.log = log

    # -- the queue -----------------------------------------------------------------------------
    async def jobs(self) -> list[SqueueJob]:
        """Our jobs on this cluster (by the cluster's job name), as squeue lists them."""
        c = self.config
        result = await self.node.run("squeue", slurm.squeue_command(c.squeue, c.job_name))
        if result.exit_status != 0:
            why = last_lines(result.stderr) or f"exit {result.exit_status}"
            raise JobError(f"squeue on {self.name} failed: {why}", {"hpc": self.name})
        try:
            return slurm.parse_squeue(result.stdout)
        except slurm.SlurmParseError as exc:
            raise JobError(f"squeue on {self.name} printed what we cannot read: {exc}",
                           {"hpc": self.name}) from exc

    async def current_job(self, tries: int = 1, pause: float = 1.0) -> SqueueJob | None:
        """Our live job, if any. With tries > 1 a query SLURM failed (a busy controller's
        "Socket timed out") is asked again after ``pause``; an SSH failure is not."""
        for attempt in range(1, tries + 1):
            try:
                return slurm.pick_job(await self.jobs(), self.config.job_name)
            except JobError as exc:
                if attempt == tries:
                    raise
                self.log.info("jupyter-hpc-manager: asking %s again: %s", self.name,
                              exc.message)
                await asyncio.sleep(pause)
        raise AssertionError("unreachable")

    # -- kernels in the job ---------------------------------------------------------------------
    async def kernel_offer(self, job_id: str, node: str | None) -> dict[str, dict[str, Any]]:
        """The kernels the running job offers, by name: the cluster's ``kernels`` setting, else
        what ``kernel_discovery`` prints inside the job (a step next to the IDE). Only kernels
        that read a connection file are kept."""
        c = self.config
        if c.kernels:
            return usable_kernels(c.kernels)
        if not c.kernel_discovery.strip():
            return {}
        argv = [c.srun, f"--jobid={job_id}", "--overlap", "-N1", "-n1", "--input=none"]
        if node:
            argv.append(f"--nodelist={node}")
        command = shlex.join([*argv, "sh", "-c", c.kernel_discovery])
        result = await self.node.run("kernels", command)
        if result.exit_status != 0:
            why = last_lines(result.stderr) or f"exit {result.exit_status}"
            raise JobError(f"Asking job {job_id} on {self.name} for its kernels failed: {why}",
                           {"hpc": self.name})
        try:
            listed = json.loads(result.stdout)["kernelspecs"]
            return usable_kernels({name: with_interpreter(entry["spec"], entry["resource_dir"])
                                   for name, entry in listed.items()})
        except (ValueError, KeyError, TypeError) as exc:
            raise JobError(f"The kernel list of job {job_id} on {self.name} is not what "
                           f"`jupyter kernelspec list --json` prints: {exc}",
                           {"hpc": self.name}) from exc

    # -- what the cluster offers -----------------------------------------------------------------
    async def offer(self) -> Offer:
        """sinfo (and sacctmgr, where configured). A failed sinfo raises JobError; accounts and
        QOS that cannot be read are None (typed, not chosen), and the reason is logged."""
        result = await self.node.run("sinfo", slurm.sinfo_command(self.config.sinfo))
        if result.exit_status != 0:
            why = last_lines(result.stderr) or f"exit {result.exit_status}"
            raise JobError(f"sinfo on {self.name} failed: {why}", {"hpc": self.name})
        try:
            partitions = slurm.parse_sinfo(result.stdout)
        except slurm.SlurmParseError as exc:
            raise JobError(f"sinfo on {self.name} printed what we cannot read: {exc}",
                           {"hpc": self.name}) from exc
        accounts = qos = None
        if self.config.sacctmgr:
            try:
                result = await self.node.run("sacctmgr",
                                             slurm.assoc_command(self.config.sacctmgr))
            except HPCError as exc:
                self.log.warning("jupyter-hpc-manager: sacctmgr on %s: %s; accounts and QOS "
                                 "are typed, not chosen", self.name, exc.message)
            else:
                if result.exit_status != 0:
                    self.log.warning(
                        "jupyter-hpc-manager: sacctmgr on %s exited %s: %s; accounts and QOS "
                        "are typed, not chosen", self.name, result.exit_status,
                        last_lines(result.stderr) or "(no message)")
                elif not result.stdout.strip():
                    self.log.info("jupyter-hpc-manager: sacctmgr on %s lists no association "
                                  "for this user", self.name)
                else:
                    accounts, qos = slurm.parse_assoc(result.stdout)
        return Offer(partitions, None, accounts, qos)

    async def is_folder(self, path: str) -> bool:
        result = await self.node.run("test", slurm.shell_join(["test", "-d", path]))
        return result.exit_status == 0

    # -- a job's life ------------------------------------------------------------------------
    async def submit(self, request: JobRequest, token: str, proxy_uri: str,
                     grace: float, pause: float) -> str:
        """Queue the IDE's job, carrying ``token`` (in its comment); its job id. sbatch may queue
        a job and still fail (its answer lost with the connection, past command_timeout, a
        controller's "Socket timed out"): after any failure the queue is searched for the
        token (for up to ``grace`` seconds after an SSH failure, once after a refusal) before
        the launch is called failed, so a job is never queued twice."""
        c = self.config
        # (The cluster's default partition, account and QOS are in the request already.)
        argv = slurm.sbatch_argv(c.sbatch, c.job_name, request, token=token,
                                 extra_args=c.extra_sbatch_args)
        script = slurm.job_script(c.job_name, prologue=c.prologue, ide_command=c.ide_command,
                                  proxy_uri=proxy_uri)
        try:
            result = await self.node.run("sbatch", slurm.submit_command(argv), stdin=script)
        except SshError as exc:
            job = await self._find(token, grace, pause)
            if job is None:
                raise SubmitFailed(
                    f"sbatch on {self.name} failed ({exc.message}) and no job of this launch "
                    f"showed up in the queue within {grace:.0f} s: try again",
                    {"hpc": self.name}) from exc
            self.log.warning("jupyter-hpc-manager: sbatch on %s: %s; its job %s is queued all "
                             "the same", self.name, exc.message, job.job_id)
            return job.job_id
        if result.exit_status != 0:
            message = last_lines(result.stderr) or f"sbatch exited {result.exit_status}"
            job = await self._find(token, 0.0, pause)
            if job is not None:
                self.log.warning("jupyter-hpc-manager: sbatch on %s: %s; its job %s is queued "
                                 "all the same", self.name, message, job.job_id)
                return job.job_id
            self.log.warning("jupyter-hpc-manager: sbatch on %s refused the job: %s",
                             self.name, message)
            raise JobError(f"SLURM refused the job on {self.name}: {message}",
                           {"hpc": self.name, "stderr": result.stderr.strip()[-2000:]})
        try:
            job_id = slurm.parse_sbatch_job_id(result.stdout)
        except slurm.SlurmParseError as exc:
            job = await self._find(token, 0.0, pause)
            if job is not None:
                return job.job_id
            raise JobError(f"sbatch on {self.name}: {exc}", {"hpc": self.name}) from exc
        self.log.info("jupyter-hpc-manager: launch on %s submitted job %s (cpus=%s mem=%s "
                      "time=%s partition=%s gpus=%s)", self.name, job_id, request.cpus,
                      request.mem, request.time, request.partition, request.gpus)
        return job_id

    async def _find(self, token: str, grace: float, pause: float) -> SqueueJob | None:
        """The live job that carries ``token``, looked for now and then every ``pause`` seconds
        until ``grace`` has passed (a query that fails meanwhile is asked again)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while True:
            try:
                for job in await self.jobs():
                    if job.token == token and job.state is not slurm.JobState.IDLE:
                        return job
            except HPCError as exc:
                self.log.info("jupyter-hpc-manager: looking for the job of a launch on %s: %s",
                              self.name, exc.message)
            if loop.time() + pause > deadline:
                return None
            await asyncio.sleep(pause)

    async def cancel(self, ids: Iterable[str]) -> None:
        ids = sorted(ids)
        result = await self.node.run("scancel", slurm.scancel_command(self.config.scancel, ids))
        if result.exit_status != 0 and "Invalid job id" not in result.stderr:
            raise JobError(f"scancel on {self.name} failed: {last_lines(result.stderr)}",
                           {"hpc": self.name, "jobIds": ids})

    async def set_time_limit(self, job_id: str, limit: str) -> None:
        """scontrol update JobId=<job> TimeLimit=<limit> (each one argv item)."""
        result = await self.node.run("scontrol", shlex.join(
            [self.config.scontrol, "update", f"JobId={job_id}", f"TimeLimit={limit}"]))
        if result.exit_status != 0:
            raise JobError(f"scontrol on {self.name} refused the time limit {limit}: "
                           f"{last_lines(result.stderr or result.stdout)}",
                           {"hpc": self.name, "jobId": job_id})

    async def extend(self, command: str, job_id: str, limit: str) -> None:
        """The site's extend_command with the job id and the new limit as two argv items."""
        result = await self.node.run("extend", " ".join(
            [command, shlex.quote(job_id), shlex.quote(limit)]))
        if result.exit_status != 0:
            raise JobError(f"The site's extend command on {self.name} refused: "
                           f"{last_lines(result.stderr or result.stdout)}",
                           {"hpc": self.name, "jobId": job_id})

    async def read_connection(self, job_id: str) -> Connection | None:
        """Where the job's IDE listens and its password (None: not written yet)."""
        result = await self.node.run("cat", slurm.read_connection_command(job_id))
        if result.exit_status != 0:
            return None
        try:
            d = json.loads(result.stdout)
            host, port, password = d["host"], int(d["port"]), d["password"]
            if not (_SAFE_HOST.match(host) and 0 < port < 65536 and isinstance(password, str)
                    and len(password) >= 16):
                raise ValueError("bad values")
        except (ValueError, KeyError, TypeError) as exc:
            # Never echo the file: it holds the password.
            raise JobError(f"The IDE's connection file for job {job_id} on {self.name} is "
                           "malformed", {"hpc": self.name, "jobId": job_id}) from exc
        return Connection(host, port, password)

    async def log_tail(self, job_id: str) -> str:
        try:
            result = await self.node.run("tail",
                                         slurm.log_tail_command(self.config.job_name, job_id))
        except HPCError:
            return ""
        return result.stdout.strip() if result.exit_status == 0 else ""


def last_lines(text: str, n: int = 2) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " ".join(lines[-n:])


def usable_kernels(specs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The kernelspecs a job's kernel can be started from: an argv (strings) that reads
    ``{connection_file}``, and no provisioner of its own."""
    kept = {}
    for name, spec in specs.items():
        argv = spec.get("argv") if isinstance(spec, dict) else None
        if (isinstance(name, str) and isinstance(argv, list) and argv
                and all(isinstance(a, str) for a in argv) and "{connection_file}" in argv
                and not (spec.get("metadata") or {}).get("kernel_provisioner")):
            kept[name] = spec
    return kept


_KERNEL_DIR = re.compile(r"^(/.+)/share/jupyter/kernels/[^/]+/?$")


def with_interpreter(spec: dict[str, Any], resource_dir: str) -> dict[str, Any]:
    """A spec whose argv starts with a bare ``python`` means the Python of the environment
    that lists it (jupyter_client runs such a spec with its own interpreter): the environment's
    ``bin/python``, found from the spec's folder (``<prefix>/share/jupyter/kernels/<name>``)."""
    argv = spec.get("argv")
    match = _KERNEL_DIR.match(resource_dir or "")
    if (isinstance(argv, list) and argv and argv[0] in ("python", "python3") and match
            and not match.group(1).startswith(("/usr/local", "/usr"))):
        return {**spec, "argv": [f"{match.group(1)}/bin/python", *argv[1:]]}
    return spec
