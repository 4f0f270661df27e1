/**
 * The recent-tasks section of the panel. A row expands to show the task's transitions and,
 * for a failed task, the remote exception.
 */
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import { ITask } from './api';
import { h, statusBadge } from './dom';
import { formatAge, formatOffset, formatTime, shortId } from './format';
import { FxModel } from './model';

/** Age cells are refreshed this often while the list is visible, in ms. */
const AGE_TICK_MS = 5000;

/** Recent tasks: function, id and endpoint, status, age. */
export class TaskListWidget extends Widget {
  constructor(private readonly _model: FxModel) {
    super();
    this.addClass('fx-TaskList');
    this.title.label = 'Recent tasks';
    _model.changed.connect(() => this.update(), this);
    this.node.addEventListener('click', this);
    this.node.addEventListener('keydown', this);
  }

  /** Toggle a row on click, Enter or Space. */
  handleEvent(event: Event): void {
    const target = event.target as HTMLElement;
    const row = target.closest<HTMLElement>('.fx-TaskRow');
    if (!row) {
      return;
    }
    if (event instanceof KeyboardEvent && event.key !== 'Enter' && event.key !== ' ') {
      return;
    }
    event.preventDefault();
    this._toggle(row.dataset.taskId!);
  }

  protected onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    this._timer = window.setInterval(() => {
      if (this.isVisible) {
        this._refreshAges();
      }
    }, AGE_TICK_MS);
  }

  protected onBeforeDetach(msg: Message): void {
    window.clearInterval(this._timer);
    super.onBeforeDetach(msg);
  }

  protected onUpdateRequest(_msg: Message): void {
    // Rows are rebuilt: remember which one had the keyboard focus to give it back.
    const focused = (document.activeElement as HTMLElement | null)?.closest<HTMLElement>(
      '.fx-TaskRow'
    );
    const focusedId = this.node.contains(focused ?? null) ? focused?.dataset.taskId : undefined;
    const tasks = this._model.tasks;
    if (tasks.length === 0) {
      this.node.replaceChildren(h('p', { class: 'fx-Empty' }, 'No tasks yet.'));
      return;
    }
    const now = Date.now() / 1000;
    const body = h('tbody');
    for (const task of tasks) {
      const expanded = this._expanded.has(task.task_id);
      body.append(this._row(task, expanded, now));
      if (expanded) {
        body.append(detailsRow(task));
      }
    }
    this.node.replaceChildren(h('table', { class: 'fx-Table' }, body));
    if (focusedId) {
      body.querySelector<HTMLElement>(`.fx-TaskRow[data-task-id="${CSS.escape(focusedId)}"]`)?.focus();
    }
  }

  /** Only the age cells change with time; rebuilding rows would drop a text selection. */
  private _refreshAges(): void {
    const now = Date.now() / 1000;
    for (const cell of this.node.querySelectorAll<HTMLElement>('td[data-created]')) {
      cell.textContent = formatAge(Number(cell.dataset.created), now);
    }
  }

  private _row(task: ITask, expanded: boolean, now: number): HTMLTableRowElement {
    const created = createdAt(task);
    const functionId = task.details.function_id;
    const functionName = this._model.functionName(functionId);
    return h(
      'tr',
      {
        class: 'fx-TaskRow',
        'data-task-id': task.task_id,
        tabindex: '0',
        role: 'button',
        'aria-expanded': String(expanded)
      },
      h(
        'td',
        { class: 'fx-Main' },
        h('div', { class: 'fx-Name', title: functionId }, functionName ?? shortId(functionId)),
        h(
          'div',
          { class: 'fx-Sub' },
          h('span', { class: 'fx-Id', title: task.task_id }, shortId(task.task_id)),
          ' · ',
          this._model.endpointName(task.details.endpoint_id)
        )
      ),
      h('td', { class: 'fx-Side' }, statusBadge(task.status)),
      h(
        'td',
        {
          class: 'fx-Side fx-Age',
          'data-created': created === undefined ? undefined : String(created),
          title: created === undefined ? undefined : formatTime(created)
        },
        formatAge(created, now)
      )
    );
  }

  private _toggle(taskId: string): void {
    if (this._expanded.delete(taskId)) {
      this.update();
      return;
    }
    this._expanded.add(taskId);
    this.update();
    this._model.loadTask(taskId).catch(error => {
      console.warn(`fx: could not load task ${taskId}`, error);
    });
  }

  private _expanded = new Set<string>();
  private _timer: number | undefined;
}

/** When the task was submitted (else its earliest transition). */
function createdAt(task: ITask): number | undefined {
  if (typeof task.details.created === 'number') {
    return task.details.created;
  }
  const times = Object.values(task.details.task_transitions ?? {});
  return times.length ? Math.min(...times) : undefined;
}

/** The expansion of a row: transitions in time order, then the exception if any. */
function detailsRow(task: ITask): HTMLTableRowElement {
  const created = createdAt(task) ?? 0;
  const transitions = Object.entries(task.details.task_transitions ?? {}).sort(
    ([, a], [, b]) => a - b
  );
  const list = h(
    'ol',
    { class: 'fx-Transitions' },
    ...transitions.map(([state, ts]) =>
      h('li', { title: formatTime(ts) }, statusBadge(state), ' ', formatOffset(ts - created))
    )
  );
  const cell = h('td', { colspan: '3' }, list);
  if (task.details.retries) {
    cell.append(h('p', { class: 'fx-Retries' }, `retried ${task.details.retries}×`));
  }
  if (task.exception_text) {
    cell.append(h('pre', { class: 'fx-Exception' }, task.exception_text));
  }
  return h('tr', { class: 'fx-TaskDetails', 'data-task-id': task.task_id }, cell);
}
