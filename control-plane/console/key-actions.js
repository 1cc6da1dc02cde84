// A key's life after it was made, as the API Keys pages offer it: its status
// (Active, Disabled, Expired), turning it off and on again, and rotating it
// (a new secret under the same key, the old one kept working for an overlap
// the person picks, then shown once like a new key). The list and the
// admin's list share these; `base` is the route they call
// (/api/api-keys or /api/admin-api-keys).

import { api } from './api.js';
import { h, field } from './dom.js';
import { confirmDialog, openDialog } from './dialog.js';
import { exactTime, timeCell } from './format.js';
import { showCreatedKey } from './connect.js';

const STATUS_LABELS = { active: 'Active', disabled: 'Disabled', expired: 'Expired', revoked: 'Revoked' };
const STATUS_BADGES = { active: 'ok', disabled: 'neutral', expired: 'danger', revoked: 'danger' };

/** "Active", "Disabled", "Expired" (or "Revoked"). */
export function statusLabel(key) {
  return STATUS_LABELS[key.status] || key.status || '';
}

/** Whether the secret a rotation replaced still works. */
export function inOverlap(key) {
  return Boolean(key.previousSecretExpiresAt) && new Date(key.previousSecretExpiresAt).getTime() > Date.now();
}

/** The Status cell: a badge, and during a rotation's overlap a note. */
export function statusCell(key) {
  const parts = [h('span', { class: `badge status ${STATUS_BADGES[key.status] || 'neutral'}` }, statusLabel(key))];
  if (inOverlap(key)) {
    parts.push(h('span', { class: 'badge warn', title: 'The key was rotated; the old key still works for a while.' }, 'Old key active'));
  }
  return parts;
}

/** Facts for the key's detail: status, last rotation and, during an
 *  overlap, when the old key stops and whether it is still used. */
export function lifecycleFacts(key) {
  const facts = [
    h('dt', {}, 'Status'), h('dd', {}, statusLabel(key)),
    h('dt', {}, 'Rotated'), h('dd', {}, timeCell(key.rotatedAt)),
  ];
  if (inOverlap(key)) {
    facts.push(
      h('dt', {}, 'Old key stops'), h('dd', {}, timeCell(key.previousSecretExpiresAt)),
      h('dt', {}, 'Old key last used'), h('dd', {}, timeCell(key.previousSecretLastUsedAt, 'Not since the rotation')),
    );
  }
  return facts;
}

/** The row menu's lifecycle entries for `key`: Disable or Enable, and
 *  Rotate for an active key. `done` reloads the list. */
export function lifecycleMenuItems({ key, base, owner, servers, done, onError }) {
  const items = [];
  if (key.status === 'disabled') {
    items.push({ label: 'Enable', run: () => enableKey(key, base, done, onError) });
  } else {
    items.push({ label: 'Disable', run: () => disableKey(key, base, owner, done) });
  }
  if (key.status === 'active') {
    items.push({ label: 'Rotate', run: () => openRotateDialog({ key, base, owner, servers, done }) });
  }
  return items;
}

async function disableKey(key, base, owner, done) {
  const disabled = await confirmDialog({
    title: 'Disable API Key',
    message: `Disable the API key “${key.name}”${owner ? ` of ${owner}` : ''}? Clients that use it get “invalid API key” at once. You can enable it again later; it keeps its servers and expiration.`,
    confirmLabel: 'Disable',
    run: () => api('PATCH', `${base}/${key.id}`, { enabled: false }),
  });
  if (disabled) await done(`API key “${key.name}” disabled.`);
}

async function enableKey(key, base, done, onError) {
  try {
    await api('PATCH', `${base}/${key.id}`, { enabled: true });
  } catch (e) {
    onError(e.message);
    return;
  }
  await done(`API key “${key.name}” enabled.`);
}

const OVERLAPS = [
  { label: 'None', seconds: 0 },
  { label: '1 hour', seconds: 3600 },
  { label: '1 day', seconds: 86400 },
  { label: '7 days', seconds: 604800 },
];

/** Rotate API Key: asks how long the old key keeps working, rotates, and
 *  shows the new key once. `servers`: the names the key opens now. */
export function openRotateDialog({ key, base, owner, servers, done }) {
  const error = h('div', { class: 'alert error', role: 'alert', hidden: true });
  const overlap = field('Keep the old key working for',
    h('select', {}, OVERLAPS.map((o) => h('option', { value: String(o.seconds) }, o.label))),
    'Time to put the new key in every client. With None, the old key stops at once.');
  const cancel = h('button', { type: 'button' }, 'Cancel');
  const submit = h('button', { type: 'button', class: 'primary' }, 'Rotate API Key');
  const d = openDialog({
    title: 'Rotate API Key',
    body: [
      error,
      h('p', {}, `Give “${key.name}”${owner ? ` of ${owner}` : ''} a new key. It keeps its name, servers and expiration; the new key is shown once.`),
      overlap.wrap,
    ],
    actions: [cancel, submit],
  });
  cancel.addEventListener('click', () => d.close());
  submit.addEventListener('click', async () => {
    error.hidden = true;
    submit.disabled = true;
    let rotated;
    try {
      rotated = await api('POST', `${base}/${key.id}/rotate`, { overlapSeconds: Number(overlap.input.value) });
    } catch (e) {
      error.textContent = e.message;
      error.hidden = false;
      submit.disabled = false;
      return;
    }
    d.close();
    const note = rotated.previousSecretExpiresAt
      ? `The old key keeps working until ${exactTime(new Date(rotated.previousSecretExpiresAt))}; then only this one works.`
      : 'The old key no longer works.';
    showCreatedKey({ created: rotated, servers, title: 'API Key Rotated', note: h('p', { class: 'alert info', role: 'note' }, note) });
    done();
  });
}
