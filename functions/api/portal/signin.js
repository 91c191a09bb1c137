// Sign-in, by the deployment's mode (GET /portal/config.json):
//  - header (the dev server): pick the store the X-Store-Id header names;
//  - jwt: OpenID Connect authorization code with PKCE against the stack's issuer, at
//    the endpoints its discovery document names (read by the API, which lets the page
//    reach the token endpoint's origin), the token kept in memory only;
//  - iam: the portal is off (a browser cannot sign SigV4 requests).

import { $, h, fill } from './dom.js';
import { signIn } from './api.js';

const PENDING = 'herald-portal-oidc'; // sessionStorage: state and verifier, for one redirect

export async function config() {
  const response = await fetch('/portal/config.json', { cache: 'no-store' });
  if (!response.ok) throw new Error(`the portal's settings could not be read (HTTP ${response.status})`);
  return response.json();
}

/** Renders the sign-in for `cfg`; calls `done(label)` once signed in. */
export async function render(cfg, done) {
  const body = $('signin-body');
  if (cfg.mode === 'header') return storePicker(body, cfg, done);
  if (cfg.mode === 'iam') {
    return fill(body, h('p', { class: 'off' },
      'The portal is off on this deployment: its API is authorized with IAM (AuthMode=IAM), ',
      'and a browser cannot sign requests with AWS credentials. Use the API from a signed back-office client, ',
      'or deploy with AuthMode=JWT and a PortalClientId to use the portal.'));
  }
  if (!cfg.client_id || !cfg.issuer) {
    return fill(body, h('p', { class: 'off' },
      'Sign-in is not configured: set the stack\'s PortalClientId parameter to a public client of the ',
      'issuer (authorization code with PKCE, redirecting to this page).'));
  }
  if (cfg.error) {
    return fill(body, h('p', { class: 'field-error', role: 'alert' }, `Sign-in is unavailable: ${cfg.error}.`));
  }
  const params = new URLSearchParams(window.location.search);
  if (params.has('code') || params.has('error')) return finishOidc(body, cfg, params, done);
  return fill(body,
    h('p', {}, 'Sign in with your account at ', h('code', {}, cfg.issuer), '.'),
    h('button', { type: 'button', class: 'primary', onclick: () => startOidc(body, cfg) }, 'Sign in'));
}

function storePicker(body, cfg, done) {
  const input = h('input', {
    id: 'store', name: 'store', type: 'text', required: true, autocomplete: 'off',
    value: cfg.default_store || '', 'aria-describedby': 'store-help store-error',
    pattern: '[A-Za-z0-9_\\-]{1,64}', spellcheck: false,
  });
  const error = h('p', { id: 'store-error', class: 'field-error' });
  const form = h('form', {
    novalidate: true,
    onsubmit: (event) => {
      event.preventDefault();
      const store = input.value.trim();
      if (!/^[A-Za-z0-9_-]{1,64}$/.test(store)) {
        input.setAttribute('aria-invalid', 'true');
        error.textContent = 'A store id is 1 to 64 letters, digits, - or _.';
        input.focus();
        return;
      }
      input.removeAttribute('aria-invalid');
      error.textContent = '';
      signIn({ store });
      done(`Store ${store}`);
    },
  },
  h('div', { class: 'field' },
    h('label', { for: 'store' }, 'Store'),
    h('p', { id: 'store-help', class: 'help' },
      'The dev server acts for the store you name (the X-Store-Id header).'),
    input, error),
  h('button', { type: 'submit', class: 'primary' }, 'Sign in'));
  fill(body, form);
  input.focus();
}

const base64url = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes)))
  .replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
const random = (n) => base64url(crypto.getRandomValues(new Uint8Array(n)));
const redirectUri = () => `${window.location.origin}/portal`;

async function startOidc(body, cfg) {
  try {
    const verifier = random(48);
    const state = random(24);
    const challenge = base64url(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier)));
    sessionStorage.setItem(PENDING, JSON.stringify({ state, verifier }));
    const url = new URL(cfg.authorization_endpoint);
    url.search = new URLSearchParams({
      response_type: 'code', client_id: cfg.client_id, redirect_uri: redirectUri(),
      scope: 'openid', state, code_challenge: challenge, code_challenge_method: 'S256',
    }).toString();
    window.location.assign(url.toString());
  } catch (e) {
    fill(body, h('p', { class: 'field-error', role: 'alert' }, `Sign-in failed: ${e.message}`));
  }
}

async function finishOidc(body, cfg, params, done) {
  const pending = JSON.parse(sessionStorage.getItem(PENDING) || 'null');
  sessionStorage.removeItem(PENDING);
  // The code leaves the address bar (and history) at once.
  window.history.replaceState(null, '', '/portal');
  const fail = (why) => fill(body, h('p', { class: 'field-error', role: 'alert' }, `Sign-in failed: ${why}`),
    h('button', { type: 'button', class: 'primary', onclick: () => startOidc(body, cfg) }, 'Sign in again'));
  if (params.has('error')) return fail(params.get('error_description') || params.get('error'));
  if (!pending || pending.state !== params.get('state')) return fail('the answer does not match this sign-in');
  try {
    const response = await fetch(cfg.token_endpoint, {
      method: 'POST', credentials: 'omit',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: 'authorization_code', code: params.get('code'), redirect_uri: redirectUri(),
        client_id: cfg.client_id, code_verifier: pending.verifier,
      }),
    });
    const tokens = await response.json();
    if (!response.ok || !tokens.access_token) return fail(tokens.error_description || tokens.error || `HTTP ${response.status}`);
    signIn({ token: tokens.access_token });
    done('Signed in');
  } catch (e) {
    fail(e.message);
  }
}
