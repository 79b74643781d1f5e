"""Packaging: a wheel built from a clean clone, or from a checkout where `make` ran, carries the
server extension's config and the built JupyterLab extension (each file once), so installing it
needs no node; the installed extension is listed."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import pytest

from jupyter_process import JUPYTER, ROOT


@pytest.mark.parametrize("state", ["a fresh clone", "this checkout, after make"])
def test_a_wheel_carries_the_labextension_and_each_file_once(tmp_path, state):
    """From a fresh clone the wheel's build runs jlpm; in a checkout where `make` has built the
    labextension it takes that build. Either way each file is in it once (a file twice makes
    `pip install .` fail)."""
    source = ROOT
    if state == "a fresh clone":
        source = tmp_path / "clone"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(source)], check=True)
    else:
        assert (ROOT / "jupyter_hpc_manager" / "labextension" / "package.json").exists()
    out = tmp_path / "dist"
    # As CI builds it: no node_modules, yarn.lock enforced (CI=true makes jlpm refuse changes).
    env = {**os.environ, "CI": "true"}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out),
                    str(source)], check=True, env=env)
    wheel = next(out.glob("jupyter_hpc_manager-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    data = "jupyter_hpc_manager-0.1.0.data/data/"
    ext = data + "share/jupyter/labextensions/jupyter-hpc-manager/"
    assert ext + "package.json" in names
    assert names.count(ext + "install.json") == 1
    assert any(n.startswith(ext + "static/remoteEntry.") for n in names)
    assert ext + "schemas/jupyter-hpc-manager/plugin.json" in names
    assert data + "etc/jupyter/jupyter_server_config.d/jupyter_hpc_manager.json" in names


def test_jupyterlab_lists_the_extension_enabled_and_ok():
    out = subprocess.run([JUPYTER, "labextension", "list"], capture_output=True, text=True,
                         check=True)
    text = out.stdout + out.stderr
    line = next(x for x in text.splitlines() if "jupyter-hpc-manager" in x)
    assert "enabled" in line and "OK" in line
