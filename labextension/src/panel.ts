/** The fx side panel: a toolbar with the connection state and "fx: refresh", then sections. */
import { CommandToolbarButton } from '@jupyterlab/apputils';
import { SidePanel } from '@jupyterlab/ui-components';
import { CommandRegistry } from '@lumino/commands';
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import { h } from './dom';
import { EndpointListWidget } from './endpoints';
import { fxIcon } from './icon';
import { FxModel } from './model';
import { TaskListWidget } from './tasks';

/** Id of the panel in the shell and the layout restorer. */
export const PANEL_ID = 'fx-jupyter-panel';

/** Command ids. */
export namespace CommandIDs {
  export const refresh = 'fx:refresh';
}

/** Connection state of the events WebSocket, or the last request error. */
export class ConnectionIndicator extends Widget {
  constructor(private readonly _model: FxModel) {
    super();
    this.addClass('fx-Connection');
    _model.changed.connect(() => this.update(), this);
  }

  protected onUpdateRequest(_msg: Message): void {
    const { connection, error } = this._model;
    this.node.dataset.state = error ? 'error' : connection;
    this.node.textContent = error ?? (connection === 'live' ? 'live' : `${connection}…`);
    this.node.title = error ?? `task events: ${connection}`;
  }
}

/**
 * The panel in JupyterLab's left area. Its model starts (REST load, WebSocket) the first time
 * the panel is shown, so users who never open it cost the server nothing.
 */
export class FxPanel extends SidePanel {
  constructor(
    readonly model: FxModel,
    commands: CommandRegistry
  ) {
    super();
    this.id = PANEL_ID;
    this.addClass('fx-Panel');
    this.title.icon = fxIcon;
    this.title.caption = 'fx: endpoints and tasks';
    this.header.addWidget(
      new Widget({ node: h('h2', { class: 'jp-text-truncated' }, 'fx: endpoints and tasks') })
    );
    this.toolbar.addItem('connection', new ConnectionIndicator(model));
    this.toolbar.addItem(
      'refresh',
      new CommandToolbarButton({ commands, id: CommandIDs.refresh, label: '' })
    );
    this.addWidget(new EndpointListWidget(model));
    this.addWidget(new TaskListWidget(model));
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    void this.model.start();
  }

  dispose(): void {
    this.model.dispose();
    super.dispose();
  }
}
