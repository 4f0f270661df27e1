/** The endpoints section of the panel: one row per endpoint with its load. */
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import { IEndpointStatus } from './api';
import { h, statusBadge } from './dom';
import { formatTime } from './format';
import { FxModel } from './model';

/** Task states counted as queued at the service or the endpoint. */
const QUEUED_STATES = ['waiting-for-ep', 'waiting-for-nodes', 'waiting-for-launch'];

/** The user's endpoints: name, online/offline, workers, queued and running tasks. */
export class EndpointListWidget extends Widget {
  constructor(private readonly _model: FxModel) {
    super();
    this.addClass('fx-EndpointList');
    this.title.label = 'Endpoints';
    _model.changed.connect(() => this.update(), this);
  }

  protected onUpdateRequest(_msg: Message): void {
    const endpoints = this._model.endpoints;
    if (endpoints.length === 0) {
      this.node.replaceChildren(
        h(
          'p',
          { class: 'fx-Empty' },
          'No endpoints yet. Start one with ',
          h('code', {}, 'fx-endpoint start'),
          '.'
        )
      );
      return;
    }
    this.node.replaceChildren(
      h('table', { class: 'fx-Table' }, h('tbody', {}, ...endpoints.map(row)))
    );
  }
}

/** Two lines to fit a narrow side bar: name and status, then the load. */
function row(endpoint: IEndpointStatus): HTMLTableRowElement {
  const heartbeat = endpoint.last_heartbeat
    ? `last heartbeat ${formatTime(endpoint.last_heartbeat)}`
    : 'no heartbeat yet';
  const workers = endpoint.details?.workers;
  const load = h(
    'div',
    { class: 'fx-Sub' },
    ...(typeof workers === 'number'
      ? [h('span', { 'data-field': 'workers' }, String(workers)), ' workers · ']
      : []),
    h('span', { 'data-field': 'queued' }, count(queued(endpoint))),
    ' queued · ',
    h('span', { 'data-field': 'running' }, count(running(endpoint))),
    ' running'
  );
  return h(
    'tr',
    { class: 'fx-EndpointRow', 'data-endpoint-id': endpoint.endpoint_id },
    h(
      'td',
      { class: 'fx-Main', title: `${endpoint.endpoint_id}\n${load.textContent}\n${heartbeat}` },
      h('div', { class: 'fx-Name' }, endpoint.name),
      load
    ),
    h('td', { class: 'fx-Side' }, statusBadge(endpoint.status))
  );
}

/**
 * Queued tasks as the service counts them (which includes tasks waiting for an offline
 * endpoint), else as the endpoint's last heartbeat reported them.
 */
function queued(endpoint: IEndpointStatus): number | undefined {
  if (endpoint.tasks) {
    return QUEUED_STATES.reduce((sum, state) => sum + (endpoint.tasks?.[state] ?? 0), 0);
  }
  return endpoint.details?.queued;
}

function running(endpoint: IEndpointStatus): number | undefined {
  if (endpoint.tasks) {
    return endpoint.tasks.running ?? 0;
  }
  return endpoint.details?.running;
}

function count(value: number | undefined): string {
  return typeof value === 'number' ? String(value) : '–';
}
