import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { ILauncher } from '@jupyterlab/launcher';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStateDB } from '@jupyterlab/statedb';
import { ITranslator, nullTranslator } from '@jupyterlab/translation';
import { JSONObject } from '@lumino/coreutils';

import { hpcIcon, vscodeIcon } from './icons';
import { HPCModel } from './model';
import { HPCPanel } from './panel';
import { requestAPI } from './request';
import {
  CommandIDs,
  DEFAULT_SETTINGS,
  ISettings,
  LAST_LAUNCH_KEY,
  LaunchValues,
  PLUGIN_ID
} from './tokens';

const CATEGORY = 'HPC';

/**
 * The HPC sidebar (a view of HPCModel), its commands (palette) and a Launcher card per
 * cluster. Activation returns at once; the model talks to the server afterwards.
 */
const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'VS Code on an HPC compute node, one click away',
  autoStart: true,
  optional: [ICommandPalette, ILauncher, ILayoutRestorer, ISettingRegistry, IStateDB, ITranslator],
  activate: (
    app: JupyterFrontEnd,
    palette: ICommandPalette | null,
    launcher: ILauncher | null,
    restorer: ILayoutRestorer | null,
    settingRegistry: ISettingRegistry | null,
    state: IStateDB | null,
    translator: ITranslator | null
  ) => {
    const trans = (translator ?? nullTranslator).load('jupyter_hpc_manager');
    const model = new HPCModel({ request: requestAPI });
    const panel = new HPCPanel(model, trans);
    panel.title.icon = hpcIcon;
    panel.title.caption = trans.__('HPC clusters: VS Code on a compute node');
    app.shell.add(panel, 'left', { rank: 600 });
    restorer?.add(panel, panel.id);

    if (settingRegistry) {
      void settingRegistry.load(PLUGIN_ID).then(settings => {
        const apply = () => {
          model.settings = { ...DEFAULT_SETTINGS, ...(settings.composite as Partial<ISettings>) };
        };
        apply();
        settings.changed.connect(apply);
      });
    }
    // The last launch per cluster is the application's state, not a setting.
    if (state) {
      void app.restored
        .then(() => state.fetch(LAST_LAUNCH_KEY))
        .then(value => {
          if (value && typeof value === 'object') {
            model.lastLaunch = value as Record<string, LaunchValues>;
            model.clusters.forEach(hpc => panel.card(hpc)?.updateLast());
          }
        })
        .catch(() => undefined);
      model.launched.connect(() => {
        void state.save(LAST_LAUNCH_KEY, model.lastLaunch as unknown as JSONObject);
      });
    }
    model.launched.connect((_, { hpc }) => panel.card(hpc)?.updateLast());

    const { commands } = app;
    const target = (args: any): string | null =>
      (args?.hpc as string) || model.activeHpc || model.config?.defaultHpc || null;
    const entry = (args: any) => {
      const hpc = target(args);
      return hpc ? model.state(hpc) : null;
    };
    // Commands follow the model: the palette and menus enable what can be done now.
    model.changed.connect(() => commands.notifyCommandChanged());
    // A job that starts or ends brings or takes its kernels: the Launcher and the kernel
    // picker learn of it now, not at JupyterLab's next periodic look (61 s).
    let kernels = '';
    model.changed.connect(() => {
      const now = JSON.stringify(
        model.clusters.map(hpc => (model.state(hpc).entry?.kernels ?? []).map(k => k.name))
      );
      if (now !== kernels) {
        kernels = now;
        void app.serviceManager.kernelspecs.refreshSpecs();
      }
    });

    commands.addCommand(CommandIDs.openPanel, {
      label: trans.__('Show the HPC panel'),
      execute: () => app.shell.activateById(panel.id)
    });
    commands.addCommand(CommandIDs.refresh, {
      label: trans.__('Refresh HPC cluster status'),
      isEnabled: () => model.config !== null,
      execute: () => panel.refresh(true)
    });
    commands.addCommand(CommandIDs.launch, {
      label: args =>
        args?.hpc
          ? trans.__('VS Code on %1', args.hpc as string)
          : trans.__('Launch VS Code on the default cluster'),
      caption: trans.__(
        'Launch (or reconnect to) VS Code on an HPC cluster and open it in a new tab'
      ),
      icon: args => (args?.hpc ? vscodeIcon : undefined),
      isEnabled: args => {
        const s = entry(args);
        return !!s && !s.busy;
      },
      execute: async args => {
        const hpc = (args?.hpc as string) || model.config?.defaultHpc;
        if (!hpc) {
          return;
        }
        app.shell.activateById(panel.id);
        // Open the tab now, while the click still counts as the user's: browsers block tabs
        // opened later, when the launch has answered.
        const tab = args?.open ? window.open('', '_blank') : null;
        if (tab) {
          tab.document.title = trans.__('Starting VS Code on %1…', hpc);
          tab.document.body.textContent = trans.__(
            'Starting VS Code on %1… this tab opens it when the job runs.',
            hpc
          );
        }
        // (a cluster that asks for a login opens the login dialog first)
        const reply = await panel.launchNow(hpc);
        if (tab && reply?.url && reply.status !== 'pending') {
          tab.location.href = reply.url;
        } else if (tab) {
          tab.close();
        }
      }
    });
    commands.addCommand(CommandIDs.openVSCode, {
      label: trans.__('Open VS Code (active HPC session)'),
      isEnabled: args => !!entry(args)?.entry?.url,
      execute: args => {
        const hpc = target(args);
        if (hpc) {
          panel.openVSCode(hpc);
        }
      }
    });
    commands.addCommand(CommandIDs.stop, {
      label: trans.__('Stop VS Code (active HPC session)'),
      isEnabled: args => {
        const status = entry(args)?.entry?.status;
        return status === 'running' || status === 'pending';
      },
      execute: args => {
        const hpc = target(args);
        if (hpc) {
          return panel.stopNow(hpc);
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

    void model.start().then(
      () => {
        model.clusters.forEach((hpc, rank) =>
          launcher?.add({
            command: CommandIDs.launch,
            args: { hpc, open: true },
            category: 'Other',
            rank
          })
        );
      },
      error => panel.showProblem(error)
    );
  }
};

export default plugin;
