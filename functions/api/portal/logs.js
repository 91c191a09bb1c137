// The delivery log: the store's attempts (paged, newest first, filtered by outcome
// and event type), and one integration's page: its jobs with their attempts as a
// timeline, its logs, test and rotation, and the replay of its dead letters.

import { $, h, fill, announce, show, when, seconds } from './dom.js';
import { call, observableEvents, relative } from './api.js';
import { attemptSummary, nameOf, rotate } from './integrations.js';

const PAGE = 20;

/** The `filter` parameter (Elastic Path's syntax) of the chosen conditions. */
function filterOf(conditions) {
  const parts = conditions.filter(([, value]) => value).map(([field, value]) => `eq(${field},${value})`);
  return parts.length ? `&filter=${encodeURIComponent(parts.join(':'))}` : '';
}

function select(id, label, options) {
  return h('div', { class: 'field inline' },
    h('label', { for: id }, label),
    h('select', { id }, options.map(([value, text]) => h('option', { value }, text))));
}

/** A paged table whose pages the API's links lead to. */
function pager(links, load) {
  const prev = relative(links?.prev);
  const next = relative(links?.next);
  return h('div', { class: 'pager' },
    h('button', { type: 'button', disabled: !prev, onclick: () => load(prev) }, 'Newer'),
    h('button', { type: 'button', disabled: !next, onclick: () => load(next) }, 'Older'));
}

function attemptsTable(id, attempts, withIntegration) {
  if (attempts.length === 0) return h('p', { class: 'empty' }, 'No attempts match.');
  return h('div', { class: 'table-wrap' }, h('table', { id },
    h('thead', {}, h('tr', {}, ['When', 'Event', withIntegration && 'Integration', 'Attempt', 'Result', 'Time', 'Error']
      .filter(Boolean).map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, attempts.map((a) => h('tr', {},
      h('td', {}, when(a.meta?.timestamps?.created_at)),
      h('td', {}, a.event?.type),
      withIntegration && h('td', {}, nameOf(a.relationships?.integration?.data?.id)),
      h('td', {}, a.attempt),
      h('td', { class: a.succeeded ? 'ok' : 'bad' }, `${a.succeeded ? 'Succeeded' : 'Failed'}${a.status_code ? ` (${a.status_code})` : ''}`),
      h('td', {}, seconds(a.processing_time)),
      h('td', {}, a.error_detail || ''))))));
}

/** The store's logs. */
export async function storeLogs() {
  const catalog = await observableEvents().catch(() => []);
  const results = h('div', { id: 'logs-results', 'aria-live': 'polite' });
  const controls = h('form', { class: 'filters', onsubmit: (e) => { e.preventDefault(); load(); } },
    select('logs-outcome', 'Outcome', [['', 'All'], ['true', 'Succeeded'], ['false', 'Failed']]),
    select('logs-event', 'Event type', [['', 'All'], ...catalog.map((k) => [k, k])]),
    h('button', { type: 'submit' }, 'Apply'));
  const load = async (path) => {
    const url = path || `/v2/integrations/logs?page[limit]=${PAGE}${filterOf([
      ['succeeded', $('logs-outcome').value], ['triggered_by', $('logs-event').value]])}`;
    try {
      const doc = await call('GET', url);
      fill(results, attemptsTable('logs-table', doc.data, true), pager(doc.links, load));
    } catch (e) {
      fill(results, h('p', { class: 'field-error', role: 'alert' }, `The logs could not be read: ${e.message}`));
    }
  };
  fill($('logs-body'), controls, results);
  show('logs');
  await load();
}

/** One integration's page. */
export async function integrationPage(id) {
  let integration;
  try {
    integration = (await call('GET', `/v2/integrations/${id}`)).data;
  } catch (e) {
    announce(`The integration could not be read: ${e.message}`, 'error');
    return;
  }
  $('integration-title').textContent = integration.name;
  const secret = h('div', { id: 'rotation' });
  const replayed = h('div', { id: 'replay-result', 'aria-live': 'polite' });
  const jobs = h('div', { id: 'jobs' });
  const actions = h('div', { class: 'actions' },
    h('button', { type: 'button', onclick: () => replay(integration, replayed) }, 'Replay dead letters'),
    integration.integration_type === 'webhook'
      && h('button', { type: 'button', onclick: () => rotate(integration, secret) }, 'Rotate secret'));
  const status = h('div', { class: 'field inline' }, h('label', { for: 'jobs-status' }, 'Job status'),
    h('select', { id: 'jobs-status', onchange: () => loadJobs() },
      [['', 'All'], ['delivered', 'Delivered'], ['retrying', 'Retrying'], ['failed', 'Failed'], ['discarded', 'Discarded']]
        .map(([value, text]) => h('option', { value }, text))));
  const loadJobs = async (path) => {
    const url = path || `/v2/integrations/${id}/jobs?page[limit]=${PAGE}${filterOf([['status', $('jobs-status').value]])}`;
    try {
      const doc = await call('GET', url);
      fill(jobs, doc.data.length === 0 ? h('p', { class: 'empty' }, 'No jobs match.')
        : h('ul', { class: 'jobs' }, doc.data.map((job) => jobItem(id, job))), pager(doc.links, loadJobs));
    } catch (e) {
      fill(jobs, h('p', { class: 'field-error', role: 'alert' }, `The jobs could not be read: ${e.message}`));
    }
  };
  fill($('integration-body'),
    h('p', {}, `${integration.integration_type} · ${integration.enabled ? 'enabled' : 'disabled'} · observes ${integration.observes.join(', ')}`),
    actions, secret, replayed,
    h('h2', {}, 'Jobs'), status, jobs);
  show('integration');
  await loadJobs();
}

function jobItem(integrationId, job) {
  const timeline = h('ol', { class: 'timeline', hidden: true, id: `timeline-${job.id}` });
  const toggle = h('button', {
    type: 'button', 'aria-expanded': 'false', 'aria-controls': timeline.id,
    onclick: async () => {
      const open = toggle.getAttribute('aria-expanded') !== 'true';
      toggle.setAttribute('aria-expanded', String(open));
      timeline.hidden = !open;
      if (open && timeline.childElementCount === 0) {
        try {
          const doc = await call('GET', `/v2/integrations/${integrationId}/jobs/${job.id}/logs?page[limit]=100`);
          // Oldest first: the story of the job.
          fill(timeline, [...doc.data].reverse().map((a) => h('li', { class: a.succeeded ? 'ok' : 'bad' },
            h('p', {}, h('strong', {}, `Attempt ${a.attempt}`), ` · ${when(a.meta?.timestamps?.created_at)}`),
            attemptSummary(a))));
        } catch (e) {
          fill(timeline, h('li', { class: 'bad' }, `The attempts could not be read: ${e.message}`));
        }
      }
    },
  }, 'Attempts');
  return h('li', { class: `job ${job.status}` },
    h('p', {}, h('strong', {}, job.event?.type), ` · ${job.status} after ${job.attempts} attempt${job.attempts === 1 ? '' : 's'}`,
      job.last_status_code ? ` · last status ${job.last_status_code}` : '',
      ` · queued ${when(job.meta?.timestamps?.created_at)}`),
    job.last_error && h('p', { class: 'help' }, job.last_error),
    toggle, timeline);
}

async function replay(integration, target) {
  fill(target, h('p', {}, 'Replaying…'));
  try {
    const done = (await call('POST', `/v2/integrations/${integration.id}/replay`)).data;
    fill(target, h('p', { class: 'ok' },
      `Replayed ${done.replayed} of ${done.scanned} dead-lettered job${done.scanned === 1 ? '' : 's'}`,
      done.complete ? ' (the dead-letter queue was read to its end).' : ': more may wait, replay again.'));
  } catch (e) {
    fill(target, h('p', { class: 'field-error', role: 'alert' }, `Replay failed: ${e.message}`));
  }
}
