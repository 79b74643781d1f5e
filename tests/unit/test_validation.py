"""User input checks: every field, the contract's messages, and shell metacharacters."""

from __future__ import annotations

import pytest

from jupyter_hpc_manager import validation
from jupyter_hpc_manager.errors import ValidationError

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
