"""jupyter-hpc-manager: VS Code on an HPC compute node, launched as a SLURM job from Jupyter."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .app import HPCManagerApp

    return [{"module": "jupyter_hpc_manager", "app": HPCManagerApp}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    # Built from labextension/ into jupyter_hpc_manager/labextension by the wheel's build hook.
    return [{"src": "labextension", "dest": "jupyter-hpc-manager"}]
