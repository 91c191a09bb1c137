// DOM helpers: elements are built with properties and text nodes only (never
// innerHTML), so nothing the API returns is ever parsed as markup.

export const $ = (id) => document.getElementById(id);

/** An element: `props` are properties (or attributes for aria-*, data-*, for, role),
 * `on<event>` handlers; children are nodes or text. */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key === 'class') el.className = value;
    else if (key in el && !/^(aria-|data-|role$|list$|for$)/.test(key)) el[key] = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** Replaces the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  for (const child of children.flat(Infinity)) {
    if (child !== null && child !== undefined && child !== false) {
      el.append(child instanceof Node ? child : String(child));
    }
  }
  return el;
}

/** Says `message` in the page's live region (read out by screen readers). */
export function announce(message, kind = 'info') {
  const notice = $('notice');
  notice.className = `notice ${kind}`;
  notice.textContent = message;
}

const VIEWS = ['signin', 'integrations', 'editor', 'integration', 'logs'];

/** Shows one view, hides the others, and moves the focus to its heading. */
export function show(view) {
  for (const name of VIEWS) $(`view-${name}`).hidden = name !== view;
  for (const button of document.querySelectorAll('#nav button')) {
    if (button.dataset.view === view) button.setAttribute('aria-current', 'page');
    else button.removeAttribute('aria-current');
  }
  $(`${view}-title`).focus();
}

/** A time as the reader's locale writes it, to the second. */
export function when(rfc3339) {
  if (!rfc3339) return '—';
  const date = new Date(rfc3339);
  return Number.isNaN(date.getTime()) ? rfc3339 : date.toLocaleString(undefined, {
    dateStyle: 'medium', timeStyle: 'medium',
  });
}

/** Seconds, to the millisecond. */
export const seconds = (s) => (typeof s === 'number' ? `${s.toFixed(3)} s` : '—');

/** Asks a yes/no question in the page's dialog; resolves to true for yes. */
export function confirmAction(title, text, yes) {
  const dialog = $('confirm');
  $('confirm-title').textContent = title;
  $('confirm-text').textContent = text;
  $('confirm-ok').textContent = yes;
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
    dialog.returnValue = '';
    dialog.showModal();
    $('confirm-cancel').focus();
  });
}
