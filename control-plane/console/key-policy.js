// User Management > Key Policy (admins): how long keys may live, the
// expiry a key gets when none is picked, and after how many unused days a
// key is turned off. An empty field is no limit. The API checks the values
// and its message is shown as it is.

import { api } from './api.js';
import { h, errorBox, field, pageHeader, toast, uid } from './dom.js';
import { timeCell } from './format.js';

const FIELDS = [
  ['maxLifetimeDays', 'Maximum lifetime (days)', 'Keys may last at most this many days from their creation. Empty: no limit.'],
  ['defaultLifetimeDays', 'Default lifetime (days)', 'A key created without an expiration date expires after this many days. Empty: the maximum, or no expiry.'],
  ['maxUnusedDays', 'Disable keys unused for (days)', 'A key not used for this many days (since its last use, or its creation) is turned off; its owner can turn it on again. Empty: never.'],
];

export async function keyPolicyPage(main) {
  main.append(pageHeader('Key Policy', 'Limits every API key lives under. Existing keys keep their expiration dates; unused keys are turned off within a minute of passing the limit.'));
  const content = h('div');
  main.append(content);
  let policy;
  try {
    policy = await api('GET', '/api/settings/key-policy');
  } catch (e) {
    content.append(errorBox(e.message));
    return;
  }
  const formId = uid('key-policy');
  const error = h('div', { class: 'alert error', role: 'alert', hidden: true });
  const inputs = {};
  const fields = FIELDS.map(([name, label, hint]) => {
    const value = policy[name] == null ? '' : String(policy[name]);
    const f = field(label, h('input', { type: 'number', min: '1', max: '3650', step: '1', inputmode: 'numeric', value }), hint);
    inputs[name] = f.input;
    return f;
  });
  const updated = h('p', { class: 'hint' });
  const showUpdated = (p) => {
    updated.replaceChildren(...(p.updatedAt ? ['Last changed ', timeCell(p.updatedAt), '.'] : ['Never changed: no limits.']));
  };
  showUpdated(policy);
  const save = h('button', { type: 'submit', class: 'primary', form: formId }, 'Save Key Policy');
  const form = h('form', { id: formId, novalidate: true, class: 'card' }, error, fields.map((f) => f.wrap), updated, h('div', { class: 'dialog-footer' }, save));
  content.append(form);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.hidden = true;
    const body = {};
    const unreadable = FIELDS.find(([name]) => inputs[name].validity && inputs[name].validity.badInput);
    if (unreadable) {
      error.textContent = `${unreadable[1]}: enter a whole number of days, or leave it empty.`;
      error.hidden = false;
      inputs[unreadable[0]].focus();
      return;
    }
    for (const [name] of FIELDS) {
      const raw = inputs[name].value.trim();
      // Sent as typed (a number when it is one): the API decides what is valid.
      body[name] = raw === '' ? null : (Number.isFinite(Number(raw)) ? Number(raw) : raw);
    }
    save.disabled = true;
    try {
      const saved = await api('PUT', '/api/settings/key-policy', body);
      showUpdated(saved);
      toast('Key policy saved.');
    } catch (e) {
      error.textContent = e.message;
      error.hidden = false;
    } finally {
      save.disabled = false;
    }
  });
}
