import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { ILauncher } from '@jupyterlab/launcher';
import { ISettingRegistry } from '@jupyterlab/settingregistry';

import { vscodeIcon } from './icons';
import { HPCPanel } from './panel';
import { CommandIDs, DEFAULT_SETTINGS, ISettings, PLUGIN_ID } from './tokens';

const CATEGORY = 'HPC';

/**
 * The HPC sidebar, its commands (palette) and a Launcher card per cluster. Activation returns
 * at once; the panel talks to the server afterwards.
 */
const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'VS Code on an HPC compute node, one click away',
  autoStart: true,
  optional: [ICommandPalette, ILauncher, ILayoutRestorer, ISettingRegistry],
  activate: (
    app: JupyterFrontEnd,
    palette: ICommandPalette | null,
    launcher: ILauncher | null,
    restorer: ILayoutRestorer | null,
    settingRegistry: ISettingRegistry | null
  ) => {
    const panel = new HPCPanel();
    panel.title.label = 'HPC';
    panel.title.caption = 'HPC clusters: VS Code on a compute node';
    app.shell.add(panel, 'left', { rank: 600 });
    restorer?.add(panel, panel.id);

    if (settingRegistry) {
      void settingRegistry.load(PLUGIN_ID).then(settings => {
        const apply = () => {
          panel.settings = { ...DEFAULT_SETTINGS, ...(settings.composite as Partial<ISettings>) };
        };
        apply();
        settings.changed.connect(apply);
        panel.onLaunched = (hpc, values) => {
          const last = { ...panel.settings.lastLaunch, [hpc]: values };
          void settings.set('lastLaunch', last as any);
        };
      });
    }

    const { commands } = app;
    const target = (args: any): string | null =>
      (args?.hpc as string) || panel.activeHpc || panel.config?.defaultHpc || null;

    commands.addCommand(CommandIDs.openPanel, {
      label: 'Show the HPC panel',
      execute: () => app.shell.activateById(panel.id)
    });
    commands.addCommand(CommandIDs.refresh, {
      label: 'Refresh HPC cluster status',
      execute: () => panel.refresh(true)
    });
    commands.addCommand(CommandIDs.launch, {
      label: args =>
        args?.hpc ? `VS Code on ${args.hpc}` : 'Launch VS Code on the default cluster',
      caption: 'Launch (or reconnect to) VS Code on an HPC cluster and open it in a new tab',
      icon: args => (args?.hpc ? vscodeIcon : undefined),
      execute: async args => {
        const hpc = (args?.hpc as string) || panel.config?.defaultHpc;
        if (!hpc) {
          return;
        }
        app.shell.activateById(panel.id);
        // Open the tab now, while the click still counts as the user's: browsers block tabs
        // opened later, when the launch has answered.
        const tab = args?.open ? window.open('', '_blank') : null;
        if (tab) {
          tab.document.title = `Starting VS Code on ${hpc}…`;
          tab.document.body.textContent = `Starting VS Code on ${hpc}… this tab opens it when the job runs.`;
        }
        const reply = await panel.launch(hpc);
        if (tab && reply?.url && reply.status !== 'pending') {
          tab.location.href = reply.url;
        } else if (tab) {
          tab.close();
        }
      }
    });
    commands.addCommand(CommandIDs.openVSCode, {
      label: 'Open VS Code (active HPC session)',
      execute: args => {
        const hpc = target(args);
        if (hpc) {
          panel.openVSCode(hpc);
        }
      }
    });
    commands.addCommand(CommandIDs.stop, {
      label: 'Stop VS Code (active HPC session)',
      execute: args => {
        const hpc = target(args);
        if (hpc) {
          return panel.stop(hpc);
        }
      }
    });

    for (const command of [
      CommandIDs.launch,
      CommandIDs.openVSCode,
      CommandIDs.stop,
      CommandIDs.refresh,
      CommandIDs.openPanel
    ]) {
      palette?.addItem({ command, category: CATEGORY });
    }

    void panel.start().then(() => {
      if (!launcher) {
        return;
      }
      panel.config?.clusters.forEach((hpc, rank) =>
        launcher.add({
          command: CommandIDs.launch,
          args: { hpc, open: true },
          category: 'Other',
          rank
        })
      );
    });
  }
};

export default plugin;
