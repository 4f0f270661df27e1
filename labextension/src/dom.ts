/**
 * Element construction for the views. Text is always set through `textContent`, so names,
 * ids and exception text coming from the service are never parsed as HTML.
 */

/** Attributes: `class` and `data-*`/`aria-*`/other attributes as strings. */
export type Attributes = Record<string, string | undefined>;

/** Create an element with attributes and text or element children. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attributes: Attributes = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== undefined) {
      node.setAttribute(name, value);
    }
  }
  node.append(...children);
  return node;
}

/** A status label whose color comes from the stylesheet via `data-status`. */
export function statusBadge(status: string): HTMLSpanElement {
  return h('span', { class: 'fx-Status', 'data-status': status }, status);
}
