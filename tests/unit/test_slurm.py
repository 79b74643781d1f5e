"""Pure SLURM logic: durations, squeue lines, states, sbatch argv and the job script."""

from __future__ import annotations

import shlex

import pytest

from jupyter_hpc_manager import slurm
from jupyter_hpc_manager.slurm import JobRequest, JobState


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("4:56", 296),  # MM:SS
        ("0:05", 5),
        ("10:58:13", 39493),  # HH:MM:SS
        ("1-00:00:00", 86400),  # D-HH:MM:SS
        ("2-03:04:05", 2 * 86400 + 3 * 3600 + 4 * 60 + 5),
        ("1-12", 36 * 3600),  # D-HH
        ("1-12:30", 36 * 3600 + 1800),  # D-HH:MM
        ("15", 900),  # bare minutes
        ("INVALID", 0),  # what %L shows once the limit is reached
        ("UNLIMITED", None),
        ("NOT_SET", None),
        ("N/A", None),
        ("", None),
    ],
)
def test_parse_duration(text, seconds):
    assert slurm.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["abc", "1:2:3:4", "-5", "1-", "12h"])
def test_parse_duration_rejects_garbage(text):
    with pytest.raises(slurm.SlurmParseError):
        slurm.parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "hms", "human"),
    [
        (0, "00:00:00", "0s"),
        (42, "00:00:42", "42s"),
        (300, "00:05:00", "5m"),
        (39493, "10:58:13", "10h 58m"),
        (43200, "12:00:00", "12h 0m"),
        (86400 + 7200 + 5, "1-02:00:05", "1d 2h"),
        (-3, "00:00:00", "0s"),
    ],
)
def test_format_duration_and_human(seconds, hms, human):
    assert slurm.format_duration(seconds) == hms
    assert slurm.format_human(seconds) == human


def test_round_trip_durations():
    for s in (1, 59, 60, 3599, 3600, 86399, 86400, 10 * 86400 + 1):
        assert slurm.parse_duration(slurm.format_duration(s)) == s


RUNNING = ("28692461|RUNNING|g-h-1-9-25|10:58:13|12:00:00|2|40G|2025-12-30T23:28:20|gpu|"
           "gres:gpu:a100:1|proj-a|normal|hpc-code-gemini|jupyter-hpc-manager:ab12|None")
PENDING = ("12|PENDING||12:00:00|12:00:00|64|40G|2026-12-01T10:00:00|debug|N/A|proj-b|"
           "interactive|hpc-code-gemini||PartitionConfig")


def test_parse_running_line():
    job = slurm.parse_squeue_line(RUNNING)
    assert job.job_id == "28692461"
    assert job.state is JobState.RUNNING
    assert job.node == "g-h-1-9-25"
    assert job.time_left_seconds == 39493
    assert job.time_limit_seconds == 43200
    assert (job.cpus, job.memory) == ("2", "40G")
    assert job.start_time == "2025-12-30T23:28:20"
    assert job.reason is None
    assert (job.partition, job.gpus, job.account, job.qos) == ("gpu", "a100:1", "proj-a",
                                                               "normal")


def test_parse_pending_line_has_no_node_and_a_reason():
    job = slurm.parse_squeue_line(PENDING)
    assert job.state is JobState.PENDING
    assert job.node is None  # empty node field
    assert job.start_time is None  # (not started)
    assert job.estimated_start == "2026-12-01T10:00:00"  # SLURM's estimate
    assert job.reason == "PartitionConfig"
    assert (job.partition, job.gpus, job.qos) == ("debug", None, "interactive")


@pytest.mark.parametrize("tres, gpus", [
    ("N/A", None), ("gres:gpu:2", "2"), ("gres/gpu:a100:1", "a100:1"), ("gpu:3", "3"),
    ("gres:shard:4,gres:gpu:1", "1"), ("gres:gpu", "1"), ("", None),
])
def test_gpus_asked_from_squeue(tres, gpus):
    assert slurm.gpus_of(tres) == gpus


def test_completing_job_is_idle_and_not_picked():
    line = ("7|COMPLETING|vm|0:00|5:00|1|1G|2026-11-26T14:36:52|debug|N/A|proj|normal|"
            "hpc-code-gemini|(null)|None")
    job = slurm.parse_squeue_line(line)
    assert job.state is JobState.IDLE
    assert slurm.pick_job([job], "hpc-code-gemini") is None


def test_time_left_invalid_at_the_limit_means_zero():
    line = "8|RUNNING|vm|INVALID|1:00|1|1G|2026-11-26T14:36:52|debug|N/A|proj|normal|n||None"
    assert slurm.parse_squeue_line(line).time_left_seconds == 0


def test_unlimited_job():
    line = ("9|RUNNING|vm|UNLIMITED|UNLIMITED|1|1G|2026-11-26T14:36:52|debug|N/A|proj|normal|n|"
            "|None")
    job = slurm.parse_squeue_line(line)
    assert job.time_left_seconds is None and job.time_limit_seconds is None


def test_reason_may_hold_the_delimiter():
    job = slurm.parse_squeue_line(
        "5|PENDING||1:00|1:00|1|1G|N/A|debug|N/A|proj|normal|n||odd|reason")
    assert job.reason == "odd|reason"


@pytest.mark.parametrize(
    "line",
    [
        "1|RUNNING|vm|4:56",  # too few fields
        "x1|RUNNING|vm|4:56|5:00|1|1G|N/A|debug|N/A|proj|normal|n||None",  # job id not a number
        "1|running?|vm|4:56|5:00|1|1G|N/A|debug|N/A|proj|normal|n||None",  # not a state at all
        "1|RUNNING|vm|soon|5:00|1|1G|N/A|debug|N/A|proj|normal|n||None",  # not a duration
    ],
)
def test_odd_squeue_output_is_an_error_not_idle(line):
    with pytest.raises(slurm.SlurmParseError):
        slurm.parse_squeue(line + "\n")


def test_parse_squeue_skips_blank_lines():
    jobs = slurm.parse_squeue(f"\n{RUNNING}\n\n{PENDING}\n")
    assert [j.job_id for j in jobs] == ["28692461", "12"]


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("PENDING", JobState.PENDING), ("CONFIGURING", JobState.PENDING),
        ("REQUEUED", JobState.PENDING), ("SUSPENDED", JobState.PENDING),
        ("RUNNING", JobState.RUNNING),
        ("COMPLETING", JobState.IDLE), ("COMPLETED", JobState.IDLE),
        ("CANCELLED", JobState.IDLE), ("CANCELLED by 1000", JobState.IDLE),
        ("TIMEOUT", JobState.IDLE), ("FAILED", JobState.IDLE),
    ],
)
def test_map_state(state, expected):
    assert slurm.map_state(state) is expected


@pytest.mark.parametrize("state", ["REQUEUE_HOLD", "RESV_DEL_HOLD", "POWER_UP_NODE",
                                   "SOME_STATE_OF_SLURM_27"])
def test_a_state_we_never_saw_is_a_live_job_shown_as_it_is(state):
    # SLURM adds states between releases: one we do not know is a job SLURM still holds
    # (pending, never idle, so nobody launches a second job), not an error that takes the
    # cluster down; its name is kept for the user to see.
    job = slurm.parse_squeue_line(
        f"3|{state}||1:00|1:00|1|1G|N/A|debug|N/A|proj|normal|n||None")
    assert job.state is JobState.PENDING and job.slurm_state == state
    assert slurm.pick_job([job], "n") is job


def test_submit_token_travels_in_the_comment():
    argv = slurm.sbatch_argv("sbatch", "j", JobRequest(1, "1G", "00:10:00"), token="ab12")
    assert "--comment=jupyter-hpc-manager:ab12" in argv
    assert slurm.parse_squeue_line(RUNNING).token == "ab12"
    assert slurm.parse_squeue_line(PENDING).token is None  # no comment: not one of our launches


@pytest.mark.parametrize(("listed", "absent_before", "gone"), [
    ("RUNNING", 0, False), ("PENDING", 3, False),  # listed and alive: here, whatever came before
    ("COMPLETING", 0, True), ("CANCELLED", 0, True),  # an ended state: at once
    (None, 0, False),  # missed once: squeue may miss a job for a moment
    (None, 1, True),  # missed twice in a row: gone
])
def test_one_rule_for_a_job_that_squeue_misses(listed, absent_before, gone):
    job = None if listed is None else slurm.parse_squeue_line(
        f"3|{listed}||1:00|1:00|1|1G|N/A|debug|N/A|proj|normal|n||None")
    assert slurm.job_gone(job, absent_before) is gone


def test_pick_job_prefers_running_then_oldest():
    def line(i, state, name="n"):
        node = "vm" if state == "RUNNING" else ""
        return slurm.parse_squeue_line(
            f"{i}|{state}|{node}|1:00|1:00|1|1G|N/A|debug|N/A|proj|normal|{name}||None")

    jobs = [line(30, "PENDING"), line(20, "RUNNING"), line(10, "PENDING"),
            line(5, "RUNNING", name="other")]
    assert slurm.pick_job(jobs, "n").job_id == "20"
    assert slurm.pick_job(jobs[:1] + jobs[2:3], "n").job_id == "10"
    assert slurm.pick_job(jobs, "absent") is None


def test_sbatch_argv_carries_values_as_single_items():
    argv = slurm.sbatch_argv("sbatch", "hpc-code-gemini",
                             JobRequest(4, "40G", "1-00:00:00", partition="short",
                                        account="proj1"), extra_args=["--qos=ide"])
    assert argv[0] == "sbatch"
    assert "--parsable" in argv
    assert "--job-name=hpc-code-gemini" in argv
    assert "--cpus-per-task=4" in argv
    assert "--mem=40G" in argv
    assert "--time=1-00:00:00" in argv
    assert "--partition=short" in argv and "--account=proj1" in argv
    assert argv[-1] == "--qos=ide"
    # Joined for the remote shell, every item comes back as it was.
    assert shlex.split(slurm.shell_join(argv)) == argv


def test_shell_join_neutralises_metacharacters():
    nasty = ["echo", "a; touch /tmp/x", "$(id)", "`id`", "a\nb", "'q'", "a && b", "a | b"]
    assert shlex.split(slurm.shell_join(nasty)) == nasty


def test_no_partition_or_account_when_unset():
    argv = slurm.sbatch_argv("sbatch", "j", JobRequest(1, "1G", "00:10:00"))
    assert not any(a.startswith(("--partition", "--account")) for a in argv)


@pytest.mark.parametrize(
    ("stdout", "job_id"),
    [("12345\n", "12345"), ("12345;cluster1\n", "12345"),
     ("site filter: ok\n777\n", "777")],
)
def test_parse_sbatch_job_id(stdout, job_id):
    assert slurm.parse_sbatch_job_id(stdout) == job_id


@pytest.mark.parametrize("stdout", ["", "\n", "Submitted batch job\n"])
def test_parse_sbatch_job_id_refuses_no_id(stdout):
    with pytest.raises(slurm.SlurmParseError):
        slurm.parse_sbatch_job_id(stdout)


def test_squeue_argv_uses_one_checked_format():
    argv = slurm.squeue_argv("squeue", "hpc-code-gemini")
    assert "--me" in argv and "--noheader" in argv
    assert f"--format={slurm.SQUEUE_FORMAT}" in argv
    assert slurm.SQUEUE_FORMAT.count("%") == len(slurm.SQUEUE_FIELDS)


def test_job_script_has_prologue_ide_and_private_connection_file():
    script = slurm.job_script("hpc-code-gemini", prologue="module load code-server/4",
                              ide_command="/opt/cs/bin/code-server")
    assert script.startswith("#!/bin/bash\n")
    assert "module load code-server/4" in script
    assert "/opt/cs/bin/code-server" in script
    assert "umask 077" in script
    assert 'PASSWORD="$secret"' in script  # the secret travels in the environment
    assert "--auth password" in script
    assert ".jupyter-hpc-manager" in script
    # The secret is never on a command line of an external program.
    for line in script.splitlines():
        if "$secret" in line and "printf" not in line and "PASSWORD=" not in line:
            assert line.strip().startswith("secret=")


def test_the_log_path_is_the_homes_even_when_the_job_runs_elsewhere():
    argv = slurm.sbatch_argv("sbatch", "j", JobRequest(1, "1G", "00:10:00", workdir="my dir"))
    command = slurm.submit_command(argv)
    assert "'--chdir=my dir'" in command
    assert '--output="$HOME"/.jupyter-hpc-manager/logs/%x-%j.log' in command
    assert command.count("$") == 1  # nothing else is left to the shell


@pytest.mark.parametrize(("state", "left", "reason"), [
    ("TIMEOUT", None, "walltime"),
    ("DEADLINE", 100, "walltime"),
    ("CANCELLED by 1000", 600, "slurm"),
    ("COMPLETED", 600, "slurm"),
    ("PREEMPTED", 600, "slurm"),
    ("NODE_FAIL", 600, "failed"),
    ("OUT_OF_MEMORY", None, "failed"),
    ("FAILED", 0, "failed"),
    # squeue rarely shows TIMEOUT: the job is COMPLETING, or gone, with its time used up.
    ("COMPLETING", -3, "walltime"),
    (None, 0, "walltime"),
    ("COMPLETING", 120, "slurm"),
    (None, 300, "slurm"),
    (None, None, "slurm"),
])
def test_why_a_job_ended(state, left, reason):
    assert slurm.end_reason(state, left) == reason
    assert reason in slurm.END_REASONS


def test_an_end_is_told_to_a_person():
    from jupyter_hpc_manager.models import LastEnd

    said = {r: LastEnd("1234", r, "2026-12-01T10:00:00Z", "TIMEOUT" if r == "walltime" else
                       None).describe("gemini") for r in slurm.END_REASONS}
    assert said["walltime"] == "gemini's job 1234 reached its time limit (TIMEOUT)"
    assert said["stopped"] == "gemini's job 1234 was stopped from this server"
    assert said["slurm"] == "gemini's job 1234 ended outside this server"
    assert said["idle"] == "gemini's job 1234 was cancelled after being idle"
    assert said["failed"] == "gemini's job 1234 failed"
