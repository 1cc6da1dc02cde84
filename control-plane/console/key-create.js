// The Create API Key dialog: Name, Description, Expiration Date (the end of
// that day in the browser's time zone, sent as RFC 3339 with its offset) and
// MCP Servers (All MCP Servers, or a checklist of the servers the owner
// reaches). Admins on User Management > API Keys also pick the user.
// The key policy (GET /api/settings/key-policy) pre-fills the default
// expiry and names the maximum; a later date goes to the API, whose
// refusal is shown as it is.

import { api } from './api.js';
import { h, field, uid } from './dom.js';
import { openDialog } from './dialog.js';
import { endOfDay, todayValue } from './format.js';
import { showCreatedKey } from './connect.js';

const DAY_MS = 24 * 3600 * 1000;

/** The latest day whose end (in this time zone) is within `days` from now. */
function lastDayWithin(days, now = Date.now()) {
  const limit = now + days * DAY_MS;
  const at = new Date(limit);
  const end = new Date(at.getFullYear(), at.getMonth(), at.getDate(), 23, 59, 59);
  if (end.getTime() > limit) end.setDate(end.getDate() - 1);
  return todayValue(end);
}

function plural(days) {
  return days === 1 ? '1 day' : `${days} days`;
}

/** The expiry field's pre-filled day, `max` attribute and hint under the
 *  key policy (all limits may be null). */
function expiryUnderPolicy(policy) {
  const max = policy && policy.maxLifetimeDays;
  const def = policy && (policy.defaultLifetimeDays || policy.maxLifetimeDays);
  const maxDay = max ? lastDayWithin(max) : null;
  let day = def ? todayValue(new Date(Date.now() + def * DAY_MS)) : '';
  if (day && maxDay && day > maxDay) day = maxDay;
  const hint = ['The key stops working at the end of this day (your time zone).'];
  if (max) hint.push(`Keys may last at most ${plural(max)}.`);
  if (def) hint.push(`Left empty, the key expires after ${plural(def)}.`);
  else hint.push('Leave empty for a key that does not expire.');
  return { day, maxDay, hint: hint.join(' ') };
}

export async function openCreateKeyDialog(options) {
  let policy = null;
  try {
    policy = await api('GET', '/api/settings/key-policy');
  } catch {
    // Without the policy the dialog still works: the API applies it anyway.
    policy = null;
  }
  createKeyDialog(options, policy);
}

function createKeyDialog({ me, admin, users, access, presetUserId, onCreated }, policy) {
  const formId = uid('create-key');
  const error = h('div', { class: 'alert error', role: 'alert', hidden: true });
  let userField = null;
  if (admin) {
    const select = h('select', { required: true },
      h('option', { value: '' }, 'Choose a user'),
      users.map((u) => h('option', { value: String(u.id), selected: String(u.id) === String(presetUserId || '') }, u.username)));
    userField = field('User', select, 'The key belongs to this user and opens only servers they can reach.');
  }
  const name = field('Name', h('input', { type: 'text', required: true, maxlength: '100', autocomplete: 'off', 'data-autofocus': !admin }),
    'What the key is for, e.g. "CI pipeline" or "Laptop VS Code".');
  const description = field('Description', h('textarea', { maxlength: '1000' }), 'Optional.');
  const limits = expiryUnderPolicy(policy);
  const expires = field('Expiration Date', h('input', { type: 'date', min: todayValue(), max: limits.maxDay, value: limits.day }),
    limits.hint);

  const radioName = uid('scope');
  const allRadio = h('input', { type: 'radio', name: radioName, value: 'all', checked: true });
  const someRadio = h('input', { type: 'radio', name: radioName, value: 'some' });
  const checklist = h('div', { class: 'checklist', role: 'group', 'aria-label': 'MCP servers for this key' });
  const scopeError = h('p', { class: 'field-error', hidden: true });
  const scope = h('fieldset', {},
    h('legend', {}, 'MCP Servers'),
    h('label', { class: 'choice' }, allRadio, 'All MCP Servers'),
    h('p', { class: 'hint' }, 'Every server the owner can reach, now and later.'),
    h('label', { class: 'choice' }, someRadio, 'Selected MCP Servers'),
    checklist,
    scopeError);

  function ownerId() {
    return admin ? userField.input.value : String(me.id);
  }

  function fillChecklist() {
    const id = ownerId();
    const reach = id ? [...access.reachable(Number(id))].sort() : [];
    checklist.replaceChildren();
    if (!id) {
      checklist.append(h('p', { class: 'hint' }, 'Choose a user first.'));
    } else if (reach.length === 0) {
      checklist.append(h('p', { class: 'hint' }, admin
        ? 'This user cannot reach any MCP server yet: add an access rule first.'
        : 'You cannot reach any MCP server yet; an admin grants access with an access rule.'));
    }
    for (const serverName of reach) {
      const box = h('input', { type: 'checkbox', value: serverName, 'aria-label': serverName });
      box.addEventListener('change', () => { if (box.checked) someRadio.checked = true; });
      const server = access.servers.find((s) => s.name === serverName);
      const label = server && server.displayName && server.displayName !== serverName ? ` (${server.displayName})` : '';
      checklist.append(h('label', { class: 'choice' }, box, serverName, label ? h('span', { class: 'muted' }, label) : null));
    }
  }

  const cancel = h('button', { type: 'button' }, 'Cancel');
  const submit = h('button', { type: 'submit', class: 'primary', form: formId }, 'Create API Key');
  const form = h('form', { id: formId, novalidate: true },
    error, userField ? userField.wrap : null, name.wrap, description.wrap, expires.wrap, scope);
  const d = openDialog({ title: 'Create API Key', body: [form], actions: [cancel, submit] });
  fillChecklist();
  if (userField) userField.input.addEventListener('change', fillChecklist);
  cancel.addEventListener('click', () => d.close());

  function validate() {
    let ok = true;
    const fail = (f, message) => { f.setError(message); if (ok) f.input.focus(); ok = false; };
    for (const f of [userField, name, expires].filter(Boolean)) f.setError('');
    scopeError.hidden = true;
    if (userField && !userField.input.value) fail(userField, 'Choose the user the key is for.');
    if (!name.input.value.trim()) fail(name, 'Enter a name for the key.');
    const day = expires.input.value;
    let expiresAt = null;
    if (day) {
      expiresAt = endOfDay(day);
      if (!expiresAt) fail(expires, 'Enter a valid date.');
      else if (new Date(expiresAt).getTime() <= Date.now()) fail(expires, 'The expiration date is in the past. Pick today or a later day.');
    } else if (expires.input.validity && expires.input.validity.badInput) {
      fail(expires, 'Enter a valid date.');
    }
    const picked = [...checklist.querySelectorAll('input:checked')].map((b) => b.value);
    if (someRadio.checked && picked.length === 0) {
      scopeError.textContent = 'Select at least one MCP server, or choose All MCP Servers.';
      scopeError.hidden = false;
      if (ok) someRadio.focus();
      ok = false;
    }
    return ok ? { expiresAt, servers: allRadio.checked ? ['*'] : picked } : null;
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.hidden = true;
    const checked = validate();
    if (!checked) return;
    const body = {
      name: name.input.value.trim(),
      description: description.input.value.trim() || undefined,
      expiresAt: checked.expiresAt || undefined,
      mcpServerIds: checked.servers,
    };
    if (admin) body.userId = Number(userField.input.value);
    submit.disabled = true;
    try {
      const created = await api('POST', admin ? '/api/admin-api-keys' : '/api/api-keys', body);
      const reach = access.reachable(Number(ownerId()));
      const opens = checked.servers[0] === '*' ? [...reach].sort() : checked.servers;
      d.close();
      showCreatedKey({ created, servers: opens });
      onCreated();
    } catch (e) {
      // The key policy's refusal names the limit; say it of the date field.
      const message = e.message.replace(/^ExpiresAt is beyond/, 'The expiration date is beyond');
      if (message !== e.message) expires.setError(message);
      error.textContent = message;
      error.hidden = false;
      submit.disabled = false;
      error.scrollIntoView({ block: 'nearest' });
    }
  });
}
