/**
 * fx-jupyter's JupyterLab extension: the "fx" side panel with the user's endpoints and recent
 * tasks, live, and the command "fx: refresh".
 */
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { refreshIcon } from '@jupyterlab/ui-components';

import { FxApi } from './api';
import { FxModel } from './model';
import { CommandIDs, FxPanel } from './panel';

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'fx-jupyter-labextension:panel',
  description: 'A side panel with fx endpoints and recent tasks, updated live.',
  autoStart: true,
  optional: [ILayoutRestorer, ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    restorer: ILayoutRestorer | null,
    palette: ICommandPalette | null
  ) => {
    const model = new FxModel(new FxApi(app.serviceManager.serverSettings));
    app.commands.addCommand(CommandIDs.refresh, {
      label: 'fx: refresh',
      caption: 'Reload fx endpoints and tasks',
      icon: args => (args.isPalette ? undefined : refreshIcon),
      execute: () => (model.isStarted ? model.refresh() : model.start())
    });
    const panel = new FxPanel(model, app.commands);
    app.shell.add(panel, 'left', { rank: 850 });
    restorer?.add(panel, panel.id);
    palette?.addItem({ command: CommandIDs.refresh, category: 'fx' });
  }
};

export default plugin;
