"""Configuration: clusters coerced into ClusterConfig, bad values named in the error."""

from __future__ import annotations

import os

import pytest
from traitlets import TraitError
from traitlets.config import Config

from jupyter_hpc_manager.config import ClusterConfig, HPCManager


def make(**hpc):
    return HPCManager(config=Config({"HPCManager": hpc}))


def test_clusters_become_cluster_configs_with_defaults():
    m = make(clusters={"gemini": {"host": "login.example.org", "user": "alice"}})
    c = m.clusters["gemini"]
    assert isinstance(c, ClusterConfig)
    assert (c.name, c.host, c.user, c.port) == ("gemini", "login.example.org", "alice", 0)
    assert c.job_name == "hpc-code-gemini"
    assert c.ide_command == "code-server"
    assert m.default_cluster == "gemini"


def test_a_missing_key_file_is_not_a_configuration_error():
    """One config serves every user of a JupyterHub: whether ~/.ssh/id_x exists is each user's
    matter (that cluster's status says so), not a reason for the server not to start."""
    m = make(clusters={"g": {"host": "h", "identity_file": "~/.ssh/absent",
                             "known_hosts": "~/absent_known_hosts"}})
    home = os.path.expanduser("~")
    assert m.clusters["g"].identity_file == f"{home}/.ssh/absent"
    assert m.clusters["g"].known_hosts == f"{home}/absent_known_hosts"


def test_defaults_of_the_contract():
    m = make()
    assert (m.default_cpus, m.default_mem, m.default_time) == ("2", "40G", "12:00:00")
    assert (m.max_cpus, m.cache_ttl) == (128, 120)


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"clusters": {"g": {"host": "h", "prot": 22}}}, "prot"),
        ({"clusters": {"g": {"user": "u"}}}, "host"),
        ({"clusters": {"g": {"host": "h", "port": 70000}}}, "70000"),
        ({"clusters": {"g": {"host": "h; rm -rf /"}}}, "rm -rf"),
        ({"clusters": {"g": {"host": "h", "job_name": "a b"}}}, "a b"),
        ({"clusters": {"g": {"host": "h", "partition": "p;x"}}}, "p;x"),
        ({"clusters": {"bad name": {"host": "h"}}}, "bad name"),
        ({"clusters": {"a": {"host": "h", "job_name": "j"}, "b": {"host": "h", "job_name": "j"}}},
         "job_name j"),
        ({"clusters": {"g": "login.example.org"}}, "clusters['g']"),
        ({"default_cpus": "abc"}, "abc"),
        ({"default_mem": "40"}, "default_mem"),
        ({"default_time": "forever"}, "forever"),
        ({"cache_ttl": -1}, "cache_ttl"),
        ({"executor_threads": 0}, "executor_threads"),
        ({"launch_timeout": 0}, "launch_timeout"),
    ],
)
def test_bad_values_are_named(settings, named):
    with pytest.raises(TraitError) as e:
        make(**settings)
    assert named in str(e.value)


def test_default_hpc_must_be_a_cluster():
    m = make(clusters={"gemini": {"host": "h"}}, default_hpc="apollo")
    with pytest.raises(TraitError, match="apollo"):
        m.check()


@pytest.mark.parametrize(("settings", "named"), [
    ({"default_cpus": "500"}, "default_cpus '500' with max_cpus 128"),
    ({"max_cpus": 1}, "default_cpus '2' with max_cpus 1"),
])
def test_settings_that_disagree_are_named_as_a_trait_error(settings, named):
    """Checked once every setting is loaded, whatever order the config file gave them in."""
    m = make(clusters={"gemini": {"host": "h"}}, **settings)
    with pytest.raises(TraitError) as e:
        m.check()
    assert named in str(e.value)


def test_every_setting_has_help():
    for name, trait in HPCManager.class_traits(config=True).items():
        assert trait.help, name
    for name, trait in ClusterConfig.class_traits().items():
        assert trait.help, name


def test_proxy_jump_takes_several_hops_in_order():
    from jupyter_hpc_manager.ssh import resolve_jumps

    m = make(clusters={"g": {"host": "h", "proxy_jump": "alice@gw1:2200,gw2"}})
    hops = resolve_jumps(m.clusters["g"].proxy_jump, "/nonexistent")
    assert [(h.user, h.hostname, h.port) for h in hops] == [("alice", "gw1", 2200),
                                                            (hops[1].user, "gw2", 22)]
    for bad in ("gw1,", ",gw1", "gw1,,gw2", "gw1;gw2", "gw1:port"):
        with pytest.raises(TraitError, match="proxy_jump"):
            make(clusters={"g": {"host": "h", "proxy_jump": bad}})


def test_login_timeout_must_be_positive():
    assert make().login_timeout == 120.0
    # A launch's request ends well before a proxy's read timeout (nginx's is 60 s).
    assert make().launch_timeout <= 30.0
    with pytest.raises(TraitError, match="login_timeout"):
        make(login_timeout=0)


def test_presets_are_checked_at_start_up():
    m = make(clusters={"g": {"host": "h", "qos": "normal", "presets": {
        "gpu-small": {"partition": "gpu", "gpus": "1", "cpus": "8", "mem": "64G",
                      "time": "04:00:00"}}}})
    assert m.clusters["g"].presets["gpu-small"]["gpus"] == "1"
    assert m.clusters["g"].qos == "normal"
    for presets, message in (
            ({"x": {"nodes": "2"}}, "unknown field"),
            ({"x": {"mem": "lots"}}, "Invalid memory value"),
            ({"x": {"gpus": "many"}}, "Invalid gpus value"),
            ({"x": "gpu"}, "must be a dict"),
            ({"bad/name": {}}, "preset name")):
        with pytest.raises(TraitError, match=message):
            make(clusters={"g": {"host": "h", "presets": presets}})


def test_a_default_partition_every_launch_would_refuse_stops_start_up():
    with pytest.raises(TraitError, match="partition 'short,long'"):
        make(clusters={"g": {"host": "h", "partition": "short,long"}})
    assert make(clusters={"g": {"host": "h", "qos": "interactive"}}).clusters["g"].qos == \
        "interactive"
