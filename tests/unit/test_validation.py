"""User input checks: every field, the contract's messages, and shell metacharacters."""

from __future__ import annotations

import pytest

from jupyter_hpc_manager import slurm, validation
from jupyter_hpc_manager.errors import NotAllowed, ValidationError
from jupyter_hpc_manager.slurm import JobRequest

INJECTIONS = [
    "2; touch /tmp/pwned", "$(touch /tmp/pwned)", "`touch /tmp/pwned`", "2\ntouch /tmp/pwned",
    "2' || touch /tmp/pwned '", '2" && touch /tmp/pwned "', "2 && touch /tmp/pwned",
    "2 | touch /tmp/pwned", "2>/tmp/pwned", "--wrap=touch /tmp/pwned",
]


@pytest.mark.parametrize(("value", "n"), [("1", 1), ("128", 128), (4, 4), ("04", 4)])
def test_cpus_ok(value, n):
    assert validation.parse_cpus(value, 128) == n


@pytest.mark.parametrize("value", ["0", "129", 0, 129, -1, "abc", "4.0", 4.5, True, None, "",
                                   [], {}, " 4", *INJECTIONS])
def test_cpus_refused_with_the_contract_message(value):
    with pytest.raises(ValidationError) as e:
        validation.parse_cpus(value, 128)
    assert e.value.message == "Invalid CPU value: must be integer 1-128"
    assert e.value.status_code == 400


@pytest.mark.parametrize(("value", "out"), [("40G", "40G"), ("100M", "100M"), ("2t", "2T"),
                                            ("512K", "512K")])
def test_mem_ok(value, out):
    assert validation.parse_mem(value) == out


@pytest.mark.parametrize("value", ["40", "40GB", "0G", "G", "-1G", "1.5G", 40, None, "",
                                   *INJECTIONS])
def test_mem_refused(value):
    with pytest.raises(ValidationError, match="Invalid memory value"):
        validation.parse_mem(value)


@pytest.mark.parametrize("value", ["12:00:00", "00:00:30", "1-00:00:00", "7-23:59:59", "2-5:00:00",
                                   "48:00:00"])
def test_time_ok(value):
    assert validation.parse_time(value) == value


@pytest.mark.parametrize("value", ["12:00", "1:2:3", "12:60:00", "1-24:00:00", "1-023:00:00",
                                   "00:00:00", "12:00:00 ", "1d", 3600, None, *INJECTIONS])
def test_time_refused(value):
    with pytest.raises(ValidationError, match="Invalid time value"):
        validation.parse_time(value)


def test_hpc_must_be_configured():
    assert validation.parse_hpc("gemini", {"gemini": 1}) == "gemini"
    for value in ["nope", "", None, 3, "gemini; id", "x" * 1000, "é"]:
        with pytest.raises(ValidationError, match="Unknown HPC cluster"):
            validation.parse_hpc(value, {"gemini": 1})


def test_bool():
    assert validation.parse_bool(True, "cancelJob") is True
    for value in ["true", 1, None, "yes"]:
        with pytest.raises(ValidationError, match="cancelJob"):
            validation.parse_bool(value, "cancelJob")

SINFO = ("debug*|up|12:00:00|16|200000|(null)|1\n"
         "gpu|up|infinite|16|200000|gpu:tesla:2(S:0)|1\n"
         "long|up|2-00:00:00|16|200000|(null)|1\n")
PARTS = slurm.parse_sinfo(SINFO)


def req(**kw):
    return JobRequest(**{"cpus": 2, "mem": "4G", "time": "01:00:00", **kw})


@pytest.mark.parametrize("request_, message", [
    (req(partition="nope"), "Unknown partition 'nope' on c; it has: debug, gpu, long"),
    (req(time="3-00:00:00"), "time 3-00:00:00 exceeds partition debug's MaxTime 12:00:00"),
    (req(partition="long", time="3-00:00:00"),
     "time 3-00:00:00 exceeds partition long's MaxTime 2-00:00:00"),
    (req(cpus=32), "cpus 32 exceeds partition debug's 16 CPUs per node"),
    (req(mem="300G"), "mem 300G exceeds partition debug's 200000M per node"),
    (req(gpus="1"), "partition debug has no GPUs"),
    (req(partition="gpu", gpus="3"), "gpus 3 exceeds partition gpu's 2 GPUs per node"),
    (req(partition="gpu", gpus="a100:1"), "partition gpu has no GPU of type a100 (it has tesla:2)"),
])
def test_a_request_over_its_partitions_limits_names_the_limit(request_, message):
    with pytest.raises(ValidationError) as exc:
        validation.check_partition(request_, PARTS, "c")
    assert exc.value.message == message


def test_requests_within_the_limits_pass():
    assert validation.check_partition(req(time="12:00:00"), PARTS, "c").name == "debug"
    assert validation.check_partition(req(partition="gpu", gpus="tesla:2", time="5-00:00:00"),
                                      PARTS, "c").name == "gpu"
    assert validation.check_partition(req(partition="long", time="2-00:00:00", cpus=16,
                                          mem="200000M"), PARTS, "c").name == "long"


@pytest.mark.parametrize("value, parsed", [
    (None, None), ("", None), (0, None), ("0", None), (2, "2"), ("2", "2"), ("a100:1", "a100:1"),
    ("tesla:02", "tesla:2"),
])
def test_gpus(value, parsed):
    assert validation.parse_gpus(value) == parsed


@pytest.mark.parametrize("value", ["-1", "1.5", "a100", ":1", "a b:1", True, [1], "1000"])
def test_bad_gpus(value):
    with pytest.raises(ValidationError, match="gpus"):
        validation.parse_gpus(value)


@pytest.mark.parametrize("value, parsed", [
    (None, None), ("~", None), ("~/project", "project"), ("/scratch/me", "/scratch/me"),
    ("data dir/x", "data dir/x"), ("$HOME/x", "$HOME/x"),
])
def test_workdir(value, parsed):
    assert validation.parse_workdir(value) == parsed


@pytest.mark.parametrize("value", ["~root/x", "a\nb", "a\x00b", 5, "x" * 5000])
def test_bad_workdir(value):
    with pytest.raises(ValidationError, match="workdir"):
        validation.parse_workdir(value)


@pytest.mark.parametrize("value", ["a b", "x;y", "$(id)", "-x" * 40, 5])
def test_bad_names(value):
    with pytest.raises(ValidationError, match="Invalid account"):
        validation.parse_name(value, "account")


DEBUG = slurm.Partition("debug", True, 12 * 3600, 128, 200_000, {}, "up")
RUNNING, PENDING = slurm.JobState.RUNNING, slurm.JobState.PENDING


@pytest.mark.parametrize(("state", "limit", "used", "new", "kind", "seconds"), [
    (RUNNING, 7200, 600, "01:00:00", "lower", 3600),  # give time back
    (PENDING, 7200, 0, "00:30:00", "lower", 1800),
    (PENDING, 7200, 0, "0-11:00:00", "raise", 39600),  # add time while it waits
    (PENDING, 7200, 0, "12:00:00", "raise", 43200),  # up to MaxTime
    (RUNNING, 7200, 600, "02:00:00", "same", 7200),
])
def test_time_changes_slurm_allows_its_owner(state, limit, used, new, kind, seconds):
    text, got, what = validation.check_time_change(new, state, limit, used, DEBUG, "gemini")
    assert (text, got, what) == (new, seconds, kind)


def test_a_running_jobs_time_is_raised_only_by_an_operator():
    with pytest.raises(NotAllowed) as refused:
        validation.check_time_change("03:00:00", RUNNING, 7200, 600, DEBUG, "gemini")
    assert refused.value.status_code == 403
    assert "only an operator" in refused.value.message


@pytest.mark.parametrize(("state", "used", "new", "message"), [
    (PENDING, 0, "12:00:01", "exceeds partition debug's MaxTime 12:00:00"),
    (RUNNING, 3000, "00:50:00", "not more than the 00:50:00 the job has run"),
    (RUNNING, 3000, "00:50:59", "not more than the 00:50:00 the job has run"),
    (RUNNING, 0, "1:00", "must be HH:MM:SS or D-HH:MM:SS"),
    (RUNNING, 0, "00:00:00", "must be longer than zero"),
    (RUNNING, 0, "01:00:00; scancel 1", "must be HH:MM:SS or D-HH:MM:SS"),
    (RUNNING, 0, 3600, "must be HH:MM:SS or D-HH:MM:SS"),
])
def test_bad_time_changes_are_400_naming_the_limit(state, used, new, message):
    with pytest.raises(ValidationError) as bad:
        validation.check_time_change(new, state, 7200, used, DEBUG, "gemini")
    assert bad.value.status_code == 400 and bad.value.details == {"field": "time"}
    assert message in bad.value.message
