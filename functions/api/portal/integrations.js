// Integrations: the list (type, enabled, observed events, health), the create and
// edit forms per type (with Herald's delivery options) and the API's errors beside
// their fields, test deliveries, enable/disable, delete, and the once-only generated
// secret of a rotation.

import { $, h, fill, announce, show, when, seconds, confirmAction } from './dom.js';
import { call, observableEvents, Problem } from './api.js';

const CREDENTIALS = [
  { key: 'role_arn', label: 'Role ARN (keyless: Herald assumes it)' },
  { key: 'external_id', label: 'External id (with the role)' },
  { key: 'aws_access_key_id', label: 'Access key id (instead of a role)', secret: true },
  { key: 'aws_secret_access_key', label: 'Secret access key', secret: true },
];

/** Each type's configuration fields, as the API names them. */
export const TYPES = {
  webhook: { label: 'Webhook', fields: [
    { key: 'url', label: 'URL', type: 'url', required: true },
    { key: 'secret_key', label: 'Secret key (optional)', secret: true },
  ] },
  aws_sqs: { label: 'Amazon SQS queue', fields: [
    { key: 'url', label: 'Queue URL', type: 'url', required: true },
    { key: 'region', label: 'Region', required: true },
    ...CREDENTIALS,
  ] },
  stomp: { label: 'STOMP broker', fields: [
    { key: 'addresses', label: 'Broker addresses (one a line)', list: true, required: true },
    { key: 'destination', label: 'Destination', required: true },
    { key: 'username', label: 'Username', required: true },
    { key: 'password', label: 'Password', secret: true, required: true },
    { key: 'host', label: 'Virtual host (optional)' },
  ] },
  aws_eventbridge: { label: 'Amazon EventBridge bus', fields: [
    { key: 'event_bus_arn', label: 'Event bus ARN', required: true },
    { key: 'region', label: 'Region', required: true },
    { key: 'detail_type_prefix', label: 'Detail type prefix (optional)' },
    ...CREDENTIALS,
  ] },
  aws_sns: { label: 'Amazon SNS topic', fields: [
    { key: 'topic_arn', label: 'Topic ARN', required: true },
    { key: 'region', label: 'Region', required: true },
    ...CREDENTIALS,
  ] },
};

/** Herald's delivery options (`delivery`), as the API names them; empty is the default. */
const DELIVERY = [
  { key: 'retry_window_minutes', label: 'Retry failed deliveries for (minutes)', help: '30 to 1440; empty: 30, as Elastic Path.', min: 30, max: 1440 },
  { key: 'max_per_second', label: 'At most this many deliveries a second', help: '1 to 1000; empty: no limit.', min: 1, max: 1000 },
];

const typeLabel = (type) => TYPES[type]?.label || type;
let names = new Map(); // integration id -> name, for the logs

export const nameOf = (id) => names.get(id) || id;

const HEALTH = { healthy: 'Healthy', failing: 'Failing', disabled: 'Disabled' };

function healthBadge(health) {
  const status = health?.status || 'unknown';
  let text = HEALTH[status] || status;
  if (status === 'failing') text += ` (${health.consecutive_failures} failed in a row)`;
  const badge = h('span', { class: `badge ${status}` }, text);
  if (health?.disabled_reason) badge.title = health.disabled_reason;
  return badge;
}

/** Lists the store's integrations. */
export async function list() {
  const target = $('integrations-list');
  let doc;
  try {
    doc = await call('GET', '/v2/integrations?page[limit]=100');
  } catch (e) {
    fill(target, h('p', { class: 'field-error', role: 'alert' }, `The integrations could not be listed: ${e.message}`));
    return;
  }
  names = new Map(doc.data.map((i) => [i.id, i.name]));
  if (doc.data.length === 0) {
    fill(target, h('p', { id: 'no-integrations' }, 'No integrations yet.'));
    return;
  }
  fill(target, h('div', { class: 'table-wrap' }, h('table', { id: 'integrations-table' },
    h('caption', { class: 'visually-hidden' }, 'Integrations of this store'),
    h('thead', {}, h('tr', {}, ['Name', 'Type', 'State', 'Observes', 'Health', 'Actions'].map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, doc.data.map(row)))));
}

function row(integration) {
  const label = integration.name;
  return h('tr', { 'data-id': integration.id },
    h('th', { scope: 'row' }, h('button', { type: 'button', class: 'link', onclick: () => open(integration.id) }, label)),
    h('td', {}, typeLabel(integration.integration_type)),
    h('td', { class: 'state' }, integration.enabled ? 'Enabled' : 'Disabled'),
    h('td', {}, integration.observes.join(', ')),
    h('td', {}, healthBadge(integration.meta?.health)),
    h('td', { class: 'actions' },
      h('button', { type: 'button', onclick: () => test(integration), 'aria-label': `Send a test delivery to ${label}` }, 'Test'),
      h('button', { type: 'button', onclick: () => edit(integration), 'aria-label': `Edit ${label}` }, 'Edit'),
      h('button', {
        type: 'button', onclick: () => setEnabled(integration, !integration.enabled),
        'aria-label': `${integration.enabled ? 'Disable' : 'Enable'} ${label}`,
      }, integration.enabled ? 'Disable' : 'Enable'),
      h('button', { type: 'button', class: 'danger', onclick: () => remove(integration), 'aria-label': `Delete ${label}` }, 'Delete')));
}

/** The result of a test delivery (or of any attempt): status, time, error, answer. */
export function attemptSummary(attempt) {
  return h('dl', { class: 'attempt' },
    h('dt', {}, 'Result'), h('dd', { class: attempt.succeeded ? 'ok' : 'bad' }, attempt.succeeded ? 'Delivered' : 'Failed'),
    h('dt', {}, 'Status'), h('dd', {}, attempt.status_code ?? '—'),
    h('dt', {}, 'Time'), h('dd', {}, seconds(attempt.processing_time)),
    h('dt', {}, 'Error'), h('dd', {}, attempt.error_detail || 'none'),
    h('dt', {}, 'Answer'), h('dd', {}, attempt.body ? h('pre', {}, attempt.body.slice(0, 300)) : '(empty)'));
}

async function test(integration) {
  const target = $('test-result');
  fill(target, h('p', {}, `Sending a test delivery to ${integration.name}…`));
  try {
    const attempt = (await call('POST', `/v2/integrations/${integration.id}/test`)).data;
    fill(target, h('h2', {}, `Test delivery to ${integration.name} (${attempt.event?.type})`), attemptSummary(attempt),
      h('button', { type: 'button', class: 'link', onclick: () => fill(target) }, 'Dismiss'));
  } catch (e) {
    fill(target, h('p', { class: 'field-error', role: 'alert' }, `The test delivery could not be sent: ${e.message}`));
  }
}

async function setEnabled(integration, enabled) {
  try {
    await call('PUT', `/v2/integrations/${integration.id}`, { data: { type: 'integration', enabled } });
    announce(`${integration.name} is ${enabled ? 'enabled' : 'disabled'}.`, 'ok');
  } catch (e) {
    announce(`${integration.name} could not be changed: ${e.message}`, 'error');
  }
  await list();
}

async function remove(integration) {
  const yes = await confirmAction(`Delete ${integration.name}?`,
    'Its deliveries stop at once and it cannot be restored. Its logs stay until they expire.', 'Delete');
  if (!yes) return;
  try {
    await call('DELETE', `/v2/integrations/${integration.id}`);
    announce(`${integration.name} is deleted.`, 'ok');
  } catch (e) {
    announce(`${integration.name} could not be deleted: ${e.message}`, 'error');
  }
  await list();
  $('integrations-title').focus();
}

let opened = () => {};
/** Sets what opening an integration does (its jobs and logs, in logs.js). */
export function onOpen(handler) { opened = handler; }
function open(id) { opened(id); }

// --- The form -------------------------------------------------------------------

const fieldId = (pointer) => `f${pointer.replace(/[^a-z0-9]+/gi, '-')}`;

function field(pointer, label, control, help) {
  const id = fieldId(pointer);
  control.id = id;
  control.dataset.pointer = pointer;
  const described = [help && `${id}-help`, `${id}-error`].filter(Boolean).join(' ');
  control.setAttribute('aria-describedby', described);
  return h('div', { class: 'field' },
    h('label', { for: id }, label),
    help && h('p', { id: `${id}-help`, class: 'help' }, help),
    control,
    h('p', { id: `${id}-error`, class: 'field-error' }));
}

/** Shows the API's errors beside the fields their pointers name; the rest above. */
function showErrors(form, errors) {
  for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
  for (const el of form.querySelectorAll('.field-error')) el.textContent = '';
  const summary = form.querySelector('.form-errors');
  fill(summary);
  let first = null;
  for (const error of errors) {
    let pointer = error.source?.pointer || '';
    let control = null;
    while (pointer && !(control = form.querySelector(`[data-pointer="${CSS.escape(pointer)}"]`))) {
      pointer = pointer.slice(0, pointer.lastIndexOf('/'));
    }
    const detail = error.detail || error.title;
    if (control) {
      const where = $(`${control.id}-error`);
      where.textContent = where.textContent ? `${where.textContent} ${detail}` : detail;
      control.setAttribute('aria-invalid', 'true');
      first = first || control;
    } else {
      summary.append(h('li', {}, detail));
    }
  }
  summary.hidden = summary.childElementCount === 0;
  (summary.hidden ? first : summary)?.focus();
}

/** Opens the form: `existing` to edit, none to create. */
export async function edit(existing = null) {
  const catalog = await observableEvents().catch(() => []);
  const editing = existing !== null;
  $('editor-title').textContent = editing ? `Edit ${existing.name}` : 'New integration';
  const type = h('select', { name: 'integration_type', disabled: editing },
    Object.entries(TYPES).map(([key, t]) => h('option', { value: key, selected: key === (existing?.integration_type || 'webhook') }, t.label)));
  const name = h('input', { type: 'text', name: 'name', required: true, value: existing?.name || '', autocomplete: 'off' });
  const description = h('input', { type: 'text', name: 'description', value: existing?.description || '', autocomplete: 'off' });
  const enabled = h('input', { type: 'checkbox', name: 'enabled', checked: existing ? existing.enabled : true });
  const observed = new Set(existing?.observes || []);
  const events = h('fieldset', { class: 'events', 'data-pointer': '/data/observes', id: 'f-data-observes', 'aria-describedby': 'f-data-observes-error', tabindex: '-1' },
    h('legend', {}, 'Observed events'),
    h('div', { class: 'event-grid' }, catalog.map((key) => h('label', { class: 'check' },
      h('input', { type: 'checkbox', name: 'observes', value: key, checked: observed.has(key) }), ` ${key}`))),
    h('p', { id: 'f-data-observes-error', class: 'field-error' }));
  const config = h('div', { class: 'config' });
  const renderConfig = () => fill(config, TYPES[type.value].fields.map((f) => configField(f, editing ? existing : null)));
  type.addEventListener('change', renderConfig);
  renderConfig();
  const delivery = h('div', { class: 'config' });
  const renderDelivery = () => fill(delivery, deliveryFields(type.value, existing?.delivery || {}));
  type.addEventListener('change', renderDelivery);
  renderDelivery();
  const summary = h('ul', { class: 'form-errors', role: 'alert', tabindex: '-1', hidden: true });
  const form = h('form', { id: 'integration-form', novalidate: true },
    summary,
    field('/data/integration_type', 'Type', type),
    field('/data/name', 'Name', name),
    field('/data/description', 'Description (optional)', description),
    h('div', { class: 'field check' }, enabled, h('label', { for: 'f-enabled' }, ' Enabled: deliver events as they happen')),
    events,
    h('fieldset', {}, h('legend', {}, 'Configuration'), config),
    h('fieldset', { class: 'delivery' }, h('legend', {}, 'Delivery'), delivery),
    h('div', { class: 'actions' },
      h('button', { type: 'submit', class: 'primary' }, editing ? 'Save changes' : 'Create integration'),
      h('button', { type: 'button', onclick: () => { fill($('editor-body')); show('integrations'); } }, 'Cancel')));
  enabled.id = 'f-enabled';
  enabled.dataset.pointer = '/data/enabled';
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const body = bodyOf(form, { type, name, description, enabled }, existing);
    // Typed secrets leave the page with the request: the fields are emptied now.
    for (const input of form.querySelectorAll('input[data-secret]')) input.value = '';
    try {
      const saved = (await call(editing ? 'PUT' : 'POST', editing ? `/v2/integrations/${existing.id}` : '/v2/integrations', body)).data;
      fill($('editor-body'));
      announce(`${saved.name} is ${editing ? 'saved' : 'created'}.`, 'ok');
      show('integrations');
      await list();
    } catch (e) {
      if (e instanceof Problem) showErrors(form, e.errors);
      else showErrors(form, [{ detail: e.message }]);
    }
  });
  fill($('editor-body'), form);
  show('editor');
}

/** The delivery options' fields, filled from `stored` (the integration's `delivery`). */
function deliveryFields(type, stored) {
  const fields = DELIVERY.map((o) => field(`/data/delivery/${o.key}`, o.label,
    h('input', { type: 'number', name: o.key, min: o.min, max: o.max, step: 1, inputmode: 'numeric', value: stored[o.key] ?? '', autocomplete: 'off' }),
    o.help));
  if (type !== 'webhook') return fields;
  // Only a webhook sends its secret in a header (Elastic Path's X-Moltin-Secret-Key).
  const pointer = '/data/delivery/secret_header';
  const id = fieldId(pointer);
  const header = h('input', { type: 'checkbox', name: 'secret_header', checked: stored.secret_header !== false });
  header.id = id;
  header.dataset.pointer = pointer;
  header.setAttribute('aria-describedby', `${id}-help ${id}-error`);
  return [h('div', { class: 'field check' }, header,
    h('label', { for: id }, ' Send the secret key in X-Moltin-Secret-Key'),
    h('p', { id: `${id}-help`, class: 'help' }, 'As Elastic Path does. Off: receivers verify the webhook-signature header instead, and the secret never travels.'),
    h('p', { id: `${id}-error`, class: 'field-error' })), ...fields];
}

/** What `delivery` sends: on a create the options set; on an edit the ones changed. */
function deliveryOf(form, type, existing) {
  const old = existing?.delivery || {};
  const next = {};
  const header = form.querySelector('[name=secret_header]');
  if (type === 'webhook' && header) {
    next.secret_header = header.checked ? (old.secret_header === true ? true : null) : false;
  }
  for (const o of DELIVERY) {
    const raw = form.querySelector(`[name="${o.key}"]`).value.trim();
    // A number as a number; anything else as typed, for the API to say what is wrong.
    next[o.key] = raw === '' ? null : (/^\d+$/.test(raw) ? Number(raw) : raw);
  }
  const changed = {};
  for (const [key, value] of Object.entries(next)) {
    if (existing ? value !== (old[key] ?? null) : value !== null) changed[key] = value;
  }
  return Object.keys(changed).length > 0 ? changed : undefined;
}

function configField(f, existing) {
  const pointer = `/data/configuration/${f.key}`;
  const stored = existing?.configuration?.[f.key];
  let control;
  let help = null;
  if (f.list) {
    control = h('textarea', { rows: 3, name: f.key, value: Array.isArray(stored) ? stored.join('\n') : '' });
  } else if (f.secret) {
    // A stored secret is never shown: only that one exists, masked by the API.
    control = h('input', { type: 'password', name: f.key, autocomplete: 'new-password', 'data-secret': true });
    if (stored) help = `Stored (${stored}). Leave empty to keep it.`;
  } else {
    control = h('input', { type: f.type || 'text', name: f.key, value: stored ?? '', autocomplete: 'off', spellcheck: false });
  }
  if (f.required && !(f.secret && stored)) control.required = true;
  return field(pointer, f.label, control, help);
}

function bodyOf(form, controls, existing) {
  const data = { type: 'integration' };
  if (!existing) data.integration_type = controls.type.value;
  const set = (key, value, old) => { if (!existing || value !== old) data[key] = value; };
  set('name', controls.name.value.trim(), existing?.name);
  const description = controls.description.value.trim();
  if (!existing || description !== (existing.description || '')) data.description = description || (existing ? null : undefined);
  if (data.description === undefined) delete data.description;
  set('enabled', controls.enabled.checked, existing?.enabled);
  const observes = [...form.querySelectorAll('input[name=observes]:checked')].map((c) => c.value);
  if (!existing || observes.join() !== existing.observes.join()) data.observes = observes;
  const configuration = {};
  for (const f of TYPES[controls.type.value].fields) {
    const control = form.querySelector(`[name="${f.key}"]`);
    const old = existing?.configuration?.[f.key];
    if (f.list) {
      const lines = control.value.split('\n').map((l) => l.trim()).filter(Boolean);
      if (!existing || lines.join('\n') !== (old || []).join('\n')) configuration[f.key] = lines;
    } else if (f.secret) {
      if (control.value) configuration[f.key] = control.value;
    } else {
      const value = control.value.trim();
      if (existing ? value !== (old ?? '') : value) configuration[f.key] = value || null;
    }
  }
  if (!existing || Object.keys(configuration).length > 0) data.configuration = configuration;
  const delivery = deliveryOf(form, controls.type.value, existing);
  if (delivery) data.delivery = delivery;
  return { data };
}

/** A webhook's secret rotation: Herald generates the new secret and shows it once. */
export async function rotate(integration, target) {
  const yes = await confirmAction(`New secret for ${integration.name}?`,
    'Herald generates a new signing secret; the old one keeps signing beside it for a day. The new one is shown once.', 'Rotate');
  if (!yes) return;
  try {
    const doc = await call('POST', `/v2/integrations/${integration.id}/rotate-secret`);
    const secret = doc.meta?.secret_key;
    const panel = h('div', { class: 'secret-once', role: 'alert' },
      h('p', {}, 'The new secret, shown this once: copy it to your receiver now.'),
      h('output', { id: 'generated-secret' }, secret),
      h('button', { type: 'button', onclick: () => panel.remove() }, 'I have copied it: hide'));
    fill(target, panel);
  } catch (e) {
    fill(target, h('p', { class: 'field-error', role: 'alert' }, `The secret could not be rotated: ${e.message}`));
  }
}

export { when };
