// The portal's entry: reads how this deployment signs in, then shows the store's
// integrations. Plain ES modules, no framework, no build step (see
// docs/decisions/0006-portal.md).

import { $, h, fill, announce, show } from './dom.js';
import { signOut } from './api.js';
import * as signin from './signin.js';
import * as integrations from './integrations.js';
import * as logs from './logs.js';

function signedIn(label) {
  $('who-store').textContent = label;
  $('who').hidden = false;
  $('nav').hidden = false;
  show('integrations');
  integrations.list();
}

async function start() {
  $('new-integration').addEventListener('click', () => integrations.edit());
  $('back-to-list').addEventListener('click', () => { show('integrations'); integrations.list(); });
  integrations.onOpen((id) => logs.integrationPage(id));
  for (const button of document.querySelectorAll('#nav button')) {
    button.addEventListener('click', () => {
      announce('');
      if (button.dataset.view === 'logs') logs.storeLogs();
      else { show('integrations'); integrations.list(); }
    });
  }
  let cfg;
  try {
    cfg = await signin.config();
  } catch (e) {
    fill($('signin-body'), h('p', { class: 'field-error', role: 'alert' }, e.message));
    show('signin');
    return;
  }
  $('sign-out').addEventListener('click', () => {
    signOut();
    $('who').hidden = true;
    $('nav').hidden = true;
    fill($('integrations-list'));
    fill($('test-result'));
    announce('Signed out.');
    show('signin');
    signin.render(cfg, signedIn);
  });
  show('signin');
  await signin.render(cfg, signedIn);
}

start();
