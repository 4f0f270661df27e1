/**
 * The panel's state: endpoints and recent tasks, loaded over REST and kept live by the events
 * WebSocket. Views read it and re-render on `changed`; they never talk to the service.
 */
import { IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import {
  EventMessage,
  FxApi,
  IEndpointStatus,
  ITask,
  ITaskEvent,
  TERMINAL_STATES
} from './api';

/** State of the events WebSocket, shown in the panel's toolbar. */
export type ConnectionState = 'idle' | 'connecting' | 'live' | 'reconnecting';

/** How many recent tasks the panel lists. */
export const TASK_LIMIT = 50;

/** Delays between reconnection attempts grow from the first to the last, in ms. */
const RECONNECT_FIRST_MS = 1000;
const RECONNECT_MAX_MS = 30000;

/**
 * Events about tasks or endpoints the model does not know trigger a REST reload; reloads are
 * coalesced so that a burst of new tasks costs one request, not one per event.
 */
const RELOAD_DELAY_MS = 300;

/** Endpoints and recent tasks of the current user, kept current. */
export class FxModel implements IDisposable {
  constructor(readonly api: FxApi) {}

  /** Emitted after any change of data, connection state or error. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** Endpoints, sorted by name. */
  get endpoints(): IEndpointStatus[] {
    return [...this._endpoints.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  /** Recent tasks, newest first, at most {@link TASK_LIMIT}. */
  get tasks(): ITask[] {
    return this._tasks;
  }

  get connection(): ConnectionState {
    return this._connection;
  }

  /** The last failed request's message; cleared by the next successful refresh. */
  get error(): string | null {
    return this._error;
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  /** Whether {@link start} was called. */
  get isStarted(): boolean {
    return this._connection !== 'idle';
  }

  /** Load everything and open the events WebSocket; later calls do nothing. */
  async start(): Promise<void> {
    if (this.isStarted || this._isDisposed) {
      return;
    }
    this._connect();
    await this.refresh();
  }

  /** Reload endpoints and tasks over REST; a failure is kept in {@link error}. */
  async refresh(): Promise<void> {
    const [endpoints, tasks] = await Promise.allSettled([
      this.api.listEndpoints(),
      this.api.listTasks(TASK_LIMIT)
    ]);
    if (endpoints.status === 'fulfilled') {
      this._endpoints = new Map(endpoints.value.map(e => [e.endpoint_id, e]));
    }
    if (tasks.status === 'fulfilled') {
      this._tasks = this._merge(tasks.value);
    }
    const failed = [endpoints, tasks].find(
      (r): r is PromiseRejectedResult => r.status === 'rejected'
    );
    this._error = failed ? describe(failed.reason) : null;
    this._emit();
  }

  /** The name of an endpoint, or its id while unknown. */
  endpointName(endpointId: string): string {
    return this._endpoints.get(endpointId)?.name ?? endpointId;
  }

  /**
   * The name of a function, or `undefined` while it is being fetched (once per function; a
   * function the user may not read stays unnamed).
   */
  functionName(functionId: string): string | undefined {
    if (!this._functionNames.has(functionId)) {
      this._functionNames.set(functionId, undefined);
      this.api.getFunction(functionId).then(
        info => {
          this._functionNames.set(functionId, info.function_name);
          this._emit();
        },
        () => undefined
      );
    }
    return this._functionNames.get(functionId);
  }

  /** Fetch one task's full record (exception text, output) into the model. */
  async loadTask(taskId: string): Promise<void> {
    const full = await this.api.getTask(taskId);
    const index = this._tasks.findIndex(t => t.task_id === taskId);
    if (index >= 0) {
      this._tasks[index] = mergeTask(this._tasks[index], full);
      this._emit();
    }
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    window.clearTimeout(this._reconnectTimer);
    window.clearTimeout(this._reloadTimer);
    this._socket?.close();
    this._socket = null;
    Signal.clearData(this);
  }

  /** Merge a fresh task list into what the model holds (see {@link mergeTask}). */
  private _merge(fresh: ITask[]): ITask[] {
    const previous = new Map(this._tasks.map(t => [t.task_id, t]));
    return fresh.map(task => {
      const old = previous.get(task.task_id);
      return old ? mergeTask(old, task) : task;
    });
  }

  private _connect(): void {
    this._setConnection(this.isStarted ? 'reconnecting' : 'connecting');
    const socket = this.api.openEvents();
    this._socket = socket;
    socket.onopen = () => {
      this._reconnectDelay = RECONNECT_FIRST_MS;
      this._setConnection('live');
      // Events are not replayed: reload what changed before this socket was subscribed.
      void this.refresh();
    };
    socket.onmessage = event => this._onMessage(event.data);
    socket.onclose = () => {
      if (this._isDisposed || socket !== this._socket) {
        return;
      }
      this._setConnection('reconnecting');
      this._reconnectTimer = window.setTimeout(() => this._connect(), this._reconnectDelay);
      this._reconnectDelay = Math.min(this._reconnectDelay * 2, RECONNECT_MAX_MS);
    };
  }

  private _onMessage(data: unknown): void {
    let message: EventMessage;
    try {
      message = JSON.parse(String(data));
    } catch {
      console.warn('fx: ignoring an events message that is not JSON', data);
      return;
    }
    if (message.type === 'tasks') {
      this._applyTaskEvents(message.tasks);
    } else if (message.type === 'endpoints') {
      for (const endpoint of message.endpoints) {
        if (endpoint.status === 'deleted') {
          this._endpoints.delete(endpoint.endpoint_id);
        } else {
          this._endpoints.set(endpoint.endpoint_id, endpoint);
        }
      }
      this._emit();
    }
  }

  private _applyTaskEvents(events: ITaskEvent[]): void {
    const byId = new Map(this._tasks.map(t => [t.task_id, t]));
    let unknown = false;
    for (const event of events) {
      const task = byId.get(event.task_id);
      if (!task) {
        unknown = true;
        continue;
      }
      if (!this._endpoints.has(event.endpoint_id)) {
        unknown = true;
      }
      if (task.status !== event.status) {
        this._moveCount(event.endpoint_id, task.status, event.status);
      }
      task.status = event.status;
      task.pending = !TERMINAL_STATES.has(event.status);
      task.details.task_transitions = {
        ...task.details.task_transitions,
        [event.status]: event.ts
      };
      if (!task.pending) {
        task.completion_t = event.ts;
      }
      if (event.exception_text !== undefined) {
        task.exception_text = event.exception_text;
      }
    }
    if (unknown) {
      this._scheduleReload();
    }
    this._emit();
  }

  /**
   * Keep an endpoint's per-state task counts in step with a task's change, so its queued and
   * running columns follow events without waiting for the endpoint's next status.
   */
  private _moveCount(endpointId: string, from: string, to: string): void {
    const endpoint = this._endpoints.get(endpointId);
    if (!endpoint?.tasks) {
      return;
    }
    const tasks = { ...endpoint.tasks };
    tasks[from] = Math.max(0, (tasks[from] ?? 0) - 1);
    tasks[to] = (tasks[to] ?? 0) + 1;
    this._endpoints.set(endpointId, { ...endpoint, tasks });
  }

  /** Reload from REST soon; calls within {@link RELOAD_DELAY_MS} share one reload. */
  private _scheduleReload(): void {
    if (this._reloadTimer === undefined) {
      this._reloadTimer = window.setTimeout(() => {
        this._reloadTimer = undefined;
        void this.refresh();
      }, RELOAD_DELAY_MS);
    }
  }

  private _setConnection(state: ConnectionState): void {
    this._connection = state;
    this._emit();
  }

  private _emit(): void {
    if (!this._isDisposed) {
      this._changed.emit();
    }
  }

  private _changed = new Signal<this, void>(this);
  private _endpoints = new Map<string, IEndpointStatus>();
  private _tasks: ITask[] = [];
  private _functionNames = new Map<string, string | undefined>();
  private _connection: ConnectionState = 'idle';
  private _error: string | null = null;
  private _socket: WebSocket | null = null;
  private _reconnectDelay = RECONNECT_FIRST_MS;
  private _reconnectTimer: number | undefined;
  private _reloadTimer: number | undefined;
  private _isDisposed = false;
}

/** A one-line message for an error of any kind. */
function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * One task from what the model held and a fresh REST record. A record fetched before an event
 * arrived must not move a task back to an older state, so the one whose latest transition is
 * newer wins. List entries carry no exception text or output: keep what {@link FxModel.loadTask}
 * fetched, so an expanded row does not lose it on the next reload.
 */
function mergeTask(old: ITask, fresh: ITask): ITask {
  const newer = latestTransition(old) > latestTransition(fresh) ? old : fresh;
  return {
    ...newer,
    exception_text: newer.exception_text ?? fresh.exception_text ?? old.exception_text,
    details: {
      ...newer.details,
      stdout: newer.details.stdout ?? fresh.details.stdout ?? old.details.stdout,
      stderr: newer.details.stderr ?? fresh.details.stderr ?? old.details.stderr
    }
  };
}

/** The time of a task's most recent state change. */
function latestTransition(task: ITask): number {
  return Math.max(0, ...Object.values(task.details.task_transitions ?? {}));
}
