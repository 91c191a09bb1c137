// The API client: every call names the signed-in store as the deployment wants it
// (X-Store-Id on the dev server, a bearer token under JWT). The token lives in this
// module's memory only: never in storage, cookies or the page.

let credentials = null;

/** Signs in: `{store}` (dev server) or `{token}` (OpenID Connect). */
export function signIn(given) { credentials = given; }
export function signOut() { credentials = null; }
export const signedIn = () => credentials !== null;

/** An API answer that is not a success: its status and JSON:API errors. */
export class Problem extends Error {
  constructor(status, errors) {
    super(errors.map((e) => e.detail || e.title).join('; ') || `HTTP ${status}`);
    this.status = status;
    this.errors = errors;
  }
}

/** Calls the API: the parsed answer, or throws a `Problem`. */
export async function call(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (credentials?.store) headers['X-Store-Id'] = credentials.store;
  if (credentials?.token) headers.Authorization = `Bearer ${credentials.token}`;
  const init = { method, headers, cache: 'no-store', credentials: 'omit' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    throw new Problem(0, [{ detail: `the API could not be reached (${e.message})` }]);
  }
  const text = await response.text();
  let doc = null;
  try { doc = text ? JSON.parse(text) : null; } catch { doc = null; }
  if (!response.ok) {
    const errors = Array.isArray(doc?.errors) ? doc.errors
      : [{ detail: response.status === 401 ? 'your session has ended: sign in again' : `HTTP ${response.status}` }];
    throw new Problem(response.status, errors);
  }
  return doc;
}

/** The path and query of a link the API gave (its links may name another host). */
export function relative(link) {
  if (!link) return null;
  const url = new URL(link, window.location.href);
  return url.pathname + url.search;
}

let catalog = null;

/** The observable events (`GET /v2/observable-events`), read once. */
export async function observableEvents() {
  if (!catalog) catalog = (await call('GET', '/v2/observable-events')).data.map((e) => e.id);
  return catalog;
}
