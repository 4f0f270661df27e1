/**
 * The fx service's REST API and events WebSocket, as the panel uses them.
 *
 * Shapes follow docs/architecture.md ("REST API", "The events WebSocket"). Every request goes
 * through `ServerConnection` so the Jupyter token, cookie, XSRF header and base URL are handled
 * exactly as for JupyterLab's own requests.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** Route prefix of the fx service below the Jupyter base URL. */
export const API_PATH = 'fx/api/v2';

/** Task states after which nothing changes (DESIGN.md, "Task states"). */
export const TERMINAL_STATES: ReadonlySet<string> = new Set(['success', 'failed', 'cancelled']);

/** Engine status from an endpoint's last heartbeat; every field is optional. */
export interface IEngineDetails {
  workers?: number;
  idle_workers?: number;
  queued?: number;
  running?: number;
  [key: string]: unknown;
}

/**
 * `EndpointStatus` of the REST API. The events WebSocket also sends `status: 'deleted'` (with
 * only id and name) for an endpoint that was deleted.
 */
export interface IEndpointStatus {
  endpoint_id: string;
  name: string;
  status: 'online' | 'offline' | 'deleted';
  last_heartbeat: number | null;
  details?: IEngineDetails;
  tasks?: Record<string, number>;
  [key: string]: unknown;
}

/** `Task` of the REST API (list entries carry no result payloads). */
export interface ITask {
  task_id: string;
  status: string;
  pending: boolean;
  completion_t: number | null;
  exception_text?: string;
  details: {
    endpoint_id: string;
    function_id: string;
    created?: number;
    task_transitions: Record<string, number>;
    retries?: number;
    stdout?: string;
    stderr?: string;
    [key: string]: unknown;
  };
}

/** One task-state change pushed on the events WebSocket. */
export interface ITaskEvent {
  task_id: string;
  status: string;
  ts: number;
  endpoint_id: string;
  exception_text?: string;
}

/** A message of the events WebSocket. */
export type EventMessage =
  | { type: 'tasks'; tasks: ITaskEvent[] }
  | { type: 'endpoints'; endpoints: IEndpointStatus[] };

/** The function record of `GET functions/{id}` (only what the panel shows). */
export interface IFunctionInfo {
  function_id: string;
  function_name: string;
}

/** An error answer of the fx service, with its `{error, message}` body when there is one. */
export class FxApiError extends Error {
  constructor(
    readonly status: number,
    message: string
  ) {
    super(message);
  }
}

/** Typed calls to the fx service of the Jupyter server this page was served from. */
export class FxApi {
  constructor(readonly settings: ServerConnection.ISettings = ServerConnection.makeSettings()) {}

  /** `GET endpoints`. */
  async listEndpoints(): Promise<IEndpointStatus[]> {
    const body = await this.request<{ endpoints: IEndpointStatus[] }>('endpoints');
    return body.endpoints;
  }

  /** `GET tasks?limit=N`, newest first. */
  async listTasks(limit: number): Promise<ITask[]> {
    const body = await this.request<{ tasks: ITask[] }>(`tasks?limit=${limit}`);
    return body.tasks;
  }

  /** `GET tasks/{id}`: the full record, with exception text and captured output. */
  getTask(taskId: string): Promise<ITask> {
    return this.request<ITask>(`tasks/${encodeURIComponent(taskId)}`);
  }

  /** `GET functions/{id}`. */
  getFunction(functionId: string): Promise<IFunctionInfo> {
    return this.request<IFunctionInfo>(`functions/${encodeURIComponent(functionId)}`);
  }

  /**
   * Open the events WebSocket. Browsers authenticate it with the Jupyter cookie; the token is
   * added as a query parameter only where JupyterLab itself would (`settings.appendToken`, true
   * when the page and the server are on different hosts).
   */
  openEvents(): WebSocket {
    let url = URLExt.join(this.settings.wsUrl, API_PATH, 'events');
    if (this.settings.appendToken && this.settings.token) {
      url += `?token=${encodeURIComponent(this.settings.token)}`;
    }
    return new this.settings.WebSocket(url);
  }

  private async request<T>(path: string): Promise<T> {
    const url = URLExt.join(this.settings.baseUrl, API_PATH, path);
    let response: Response;
    try {
      response = await ServerConnection.makeRequest(url, {}, this.settings);
    } catch (error) {
      throw new ServerConnection.NetworkError(error as TypeError);
    }
    const text = await response.text();
    let body: unknown = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      // A proxy's HTML error page, for instance: reported below by status.
    }
    if (!response.ok) {
      const detail = body as { message?: string; error?: string } | null;
      if (response.status === 404 && !detail?.error) {
        // Jupyter's own 404 page, not an fx answer: the service is not running here.
        throw new FxApiError(404, 'fx service not found: is the fx_jupyter server extension enabled?');
      }
      throw new FxApiError(
        response.status,
        detail?.message ?? detail?.error ?? `${response.status} ${response.statusText}`
      );
    }
    return body as T;
  }
}
