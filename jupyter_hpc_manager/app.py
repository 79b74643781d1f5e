"""The Jupyter Server extension: builds the session manager from configuration at start-up,
registers the REST handlers, and closes SSH connections when the server stops."""

from __future__ import annotations

import glob
import os
import shutil
import sys
import tempfile

from jupyter_core.paths import jupyter_data_dir
from jupyter_server.extension.application import ExtensionApp
from tornado.ioloop import IOLoop
from traitlets import TraitError

from .api_handlers import handlers as api_handlers
from .config import HPCManager
from .kernels import KernelSpecs, set_manager, shutdown_job_kernels, use_nodelay_websockets
from .proxy import handlers as proxy_handlers
from .sessions import SessionManager

# Keys of cluster-status's reply; a cluster may not be named like one of them.
# ("code" would clash with the proxy's hpc/code/ URL.)
RESERVED_NAMES = frozenset({"activeHpc", "updatedAt", "cached", "cacheAge", "cacheTtl", "code"})


class HPCManagerApp(ExtensionApp):
    name = "jupyter_hpc_manager"
    load_other_extensions = True
    classes = [HPCManager]

    def initialize_settings(self) -> None:
        try:
            config = HPCManager(parent=self.serverapp, log=self.log)
            bad = RESERVED_NAMES & set(config.clusters)
            if bad:
                raise TraitError(f"cluster name(s) {', '.join(sorted(bad))} are reserved")
            config.check()
        except TraitError as exc:
            # The extension manager would log and carry on without us; a researcher is better
            # served by a server that refuses to start and says which setting is wrong.
            self.log.critical("jupyter-hpc-manager: bad configuration: HPCManager.%s", exc)
            sys.exit(1)
        state_path = config.state_file or os.path.join(
            jupyter_data_dir(), "jupyter_hpc_manager", "state.json")
        self.manager = SessionManager(config, os.path.expanduser(state_path), self.log,
                                      base_url=self.serverapp.base_url if self.serverapp else "/")
        self.settings.update(hpc_manager=self.manager)
        # Kernels in the running jobs: their kernelspecs in a folder the server's
        # KernelSpecManager reads; provisioners find their cluster through the manager.
        specs = self.manager.kernel_specs = KernelSpecs(self.log)
        ksm = getattr(self.serverapp, "kernel_spec_manager", None)
        if ksm is not None:
            ksm.kernel_dirs.append(specs.kernels_dir)
        set_manager(self.manager)
        IOLoop.current().add_callback(self.manager.start_idle_watch)
        # (self.settings: ExtensionApp copies them over the web app's settings after this
        # method, so a change made to web_app.settings here would be undone)
        if use_nodelay_websockets(self.settings):
            self.log.info("jupyter-hpc-manager: kernel websockets with TCP_NODELAY")
        remove_stale_tunnel_folders()
        self.log.info("jupyter-hpc-manager: clusters %s; state in %s",
                      ", ".join(config.clusters) or "(none)", state_path)

    def initialize_handlers(self) -> None:
        self.handlers.extend(api_handlers)
        self.handlers.extend(proxy_handlers)

    async def stop_extension(self) -> None:
        # jupyter_server stops extensions before kernels: the kernels in jobs go first, while
        # their connections can still cancel their steps (else each step would wait out
        # kernel_reconnect_seconds for a server that will not come back).
        await shutdown_job_kernels(getattr(self.serverapp, "kernel_manager", None), self.log)
        manager = getattr(self, "manager", None)
        if manager is not None:
            await manager.aclose()
            if manager.kernel_specs is not None:
                manager.kernel_specs.close()
            set_manager(None)


def remove_stale_tunnel_folders() -> None:
    """Servers before 0.2 kept websocket sockets in jhm-tunnels-* folders of the temp directory
    and left them behind; this user's are removed (today's tunnels are SSH channels only)."""
    for path in glob.glob(os.path.join(tempfile.gettempdir(), "jhm-tunnels-*")):
        try:
            if os.stat(path).st_uid == os.getuid():
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass


main = launch_new_instance = HPCManagerApp.launch_instance
