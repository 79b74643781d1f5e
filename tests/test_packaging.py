"""Packaging: a wheel built from a clean clone carries the server extension's config and the
built JupyterLab extension, so installing it needs no node; the installed extension is listed."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

from jupyter_process import JUPYTER, ROOT


def test_a_clean_clone_builds_a_wheel_with_the_labextension(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    out = tmp_path / "dist"
    # As CI builds it: no node_modules, yarn.lock enforced (CI=true makes jlpm refuse changes).
    env = {**os.environ, "CI": "true"}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out),
                    str(clone)], check=True, env=env)
    wheel = next(out.glob("jupyter_hpc_manager-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    data = "jupyter_hpc_manager-0.1.0.data/data/"
    ext = data + "share/jupyter/labextensions/jupyter-hpc-manager/"
    assert ext + "package.json" in names
    assert ext + "install.json" in names
    assert any(n.startswith(ext + "static/remoteEntry.") for n in names)
    assert ext + "schemas/jupyter-hpc-manager/plugin.json" in names
    assert data + "etc/jupyter/jupyter_server_config.d/jupyter_hpc_manager.json" in names


def test_jupyterlab_lists_the_extension_enabled_and_ok():
    out = subprocess.run([JUPYTER, "labextension", "list"], capture_output=True, text=True,
                         check=True)
    text = out.stdout + out.stderr
    line = next(x for x in text.splitlines() if "jupyter-hpc-manager" in x)
    assert "enabled" in line and "OK" in line
