// The sign-in page: "Sign in with OpenID Connect" when the control plane has
// a provider, and the admin-token form always. After sign-in the browser goes
// back to `next`, a local path only.

import { api } from './api.js';

const MESSAGES = {
  state: 'Sign-in expired or was started in another tab. Try again.',
  nonce: 'The identity provider\'s answer did not match this sign-in. Try again.',
  code: 'The identity provider did not accept the sign-in. Try again.',
  provider: 'The identity provider could not be reached or answered with an error.',
  account: 'Your account cannot sign in here. Ask an admin.',
};

/** `next` from the query when it is a local path, else the key list. */
export function nextPath(search) {
  const next = new URLSearchParams(search).get('next');
  // The server's rule for `next` (one leading slash, visible ASCII only), and
  // then the browser's own parse: URL parsing drops tabs and newlines, so
  // `/\t/evil.example` would otherwise leave the site as `//evil.example`.
  if (!next || next.length > 2048 || !/^\/(?![/\\])[\x21-\x7e]*$/.test(next)) return '/api-keys';
  const url = new URL(next, location.origin);
  if (url.origin !== location.origin) return '/api-keys';
  return url.pathname + url.search + url.hash;
}

function showError(message) {
  const box = document.getElementById('signin-error');
  box.textContent = message;
  box.hidden = false;
}

async function start() {
  const params = new URLSearchParams(location.search);
  const code = params.get('error');
  if (code) showError(MESSAGES[code] || 'Sign-in failed.');
  const next = nextPath(location.search);
  // The token form is wired before anything is awaited, and its button
  // (disabled in the page) is enabled only once the OpenID button is shown
  // or not: showing it moves the form down, and a click aimed at the form
  // before that would land elsewhere.
  wireTokenForm(next);
  try {
    const options = await api('GET', '/auth/options', undefined, { redirectOn401: false });
    if (options && options.oidc) {
      document.getElementById('oidc').hidden = false;
      document.getElementById('oidc-button').addEventListener('click', () => {
        location.assign(`/auth/login?next=${encodeURIComponent(next)}`);
      });
    }
  } catch (e) {
    showError(e.message);
  } finally {
    document.getElementById('token-button').disabled = false;
  }
}

function wireTokenForm(next) {
  const form = document.getElementById('token-form');
  const input = document.getElementById('admin-token');
  const button = document.getElementById('token-button');
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (!input.value) {
      showError('Enter the admin token.');
      input.focus();
      return;
    }
    button.disabled = true;
    try {
      await api('POST', '/auth/token', { token: input.value }, { redirectOn401: false });
      input.value = '';
      location.assign(next);
    } catch (e) {
      showError(e.message);
      button.disabled = false;
      input.select();
    }
  });
}

start();
