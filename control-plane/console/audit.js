// Audit Log: who changed what, when and from where. Admins see every event
// and can narrow it to a user or an action; anyone else sees the events
// about their own keys, whoever made them. Older events load a page at a
// time (the API's cursor).

import { api, list } from './api.js';
import { h, errorBox, field, pageHeader } from './dom.js';
import { timeCell } from './format.js';

// Every action the control plane records (its `audit::Action`; a unit test
// there checks this list names each one).
const ACTIONS = [
  ['key.created', 'Key created'],
  ['key.disabled', 'Key disabled'],
  ['key.enabled', 'Key enabled'],
  ['key.edited', 'Key edited'],
  ['key.revoked', 'Key revoked'],
  ['key.rotated', 'Key rotated'],
  ['key.disabled_by_policy', 'Key disabled by policy'],
  ['key_policy.changed', 'Key policy changed'],
  ['user.created', 'User created'],
  ['user.changed', 'User changed'],
  ['user.deleted', 'User deleted'],
  ['user.suspended', 'User suspended'],
  ['user.unsuspended', 'User unsuspended'],
  ['user.keys_revoked', 'All keys of a user revoked'],
  ['server.created', 'MCP server created'],
  ['server.changed', 'MCP server changed'],
  ['server.deleted', 'MCP server deleted'],
  ['rule.created', 'Access rule created'],
  ['rule.changed', 'Access rule changed'],
  ['rule.deleted', 'Access rule deleted'],
  ['session.created', 'Signed in'],
  ['session.admin_token_refused', 'Admin-token sign-in refused'],
];
const ACTION_LABEL = Object.fromEntries(ACTIONS);
const PAGE = 50;

/** "ada (session)", "System", "Anonymous". */
function actorText(actor, names, me) {
  if (actor === 'system') return 'System';
  if (!actor) return 'Anonymous';
  const who = actor.userId === me.id ? `${me.username} (you)` : names.get(actor.userId) || `User #${actor.userId}`;
  return `${who} · ${actor.credential}`;
}

function targetText(target, details, names) {
  switch (target.type) {
    case 'key': return `Key #${target.id}${details.name ? ` “${details.name}”` : ''}${names.has(target.ownerId) ? ` of ${names.get(target.ownerId)}` : ''}`;
    case 'user': return `User ${details.username || names.get(target.id) || `#${target.id}`}`;
    case 'server': return `MCP server ${target.id}`;
    case 'rule': return `Access rule #${target.id}${details.name ? ` “${details.name}”` : ''}`;
    case 'session': return 'Console session';
    default: return `${target.type} ${target.id ?? ''}`.trim();
  }
}

/** The details worth reading, as "reason: lost · via: user.deleted". */
function detailsText(event) {
  const skip = new Set(['name', 'username']);
  const parts = Object.entries(event.details || {})
    .filter(([k, v]) => !skip.has(k) && v !== null && v !== undefined)
    .map(([k, v]) => `${k}: ${Array.isArray(v) ? v.join(', ') : typeof v === 'object' ? JSON.stringify(v) : v}`);
  if (event.count > 1) parts.unshift(`${event.count} times`);
  return parts.join(' · ');
}

export async function auditPage(main, me) {
  const admin = me.role === 'admin';
  main.append(pageHeader('Audit Log', admin
    ? 'Every change to keys, users, MCP servers and access rules, and every sign-in, newest first.'
    : 'Every change to your API keys, whoever made it, newest first.'));
  const names = new Map([[me.id, me.username]]);
  const controls = [];
  let userSelect = null;
  if (admin) {
    const users = await list('/api/users');
    for (const u of users) names.set(u.id, u.username);
    userSelect = h('select', {}, h('option', { value: '' }, 'All users'),
      users.map((u) => h('option', { value: String(u.id) }, u.username)));
    controls.push(field('User', userSelect).wrap);
  }
  const actionSelect = h('select', {}, h('option', { value: '' }, 'All actions'),
    ACTIONS.filter(([name]) => admin || name.startsWith('key.')).map(([name, label]) => h('option', { value: name }, label)));
  controls.push(field('Action', actionSelect).wrap);
  const filters = h('div', { class: 'toolbar', role: 'search', 'aria-label': 'Filter the audit log' }, controls);
  const body = h('tbody');
  const content = h('div');
  const more = h('button', { type: 'button', hidden: true }, 'Load older events');
  main.append(filters, content, more);

  let cursor = null;
  // Each load is numbered: an answer to a load that a newer one replaced
  // (the filters changed meanwhile) is dropped, never mixed in.
  let generation = 0;
  const query = () => {
    const q = new URLSearchParams({ limit: String(PAGE) });
    if (userSelect && userSelect.value) q.set('userId', userSelect.value);
    if (actionSelect.value) q.set('action', actionSelect.value);
    if (cursor) q.set('cursor', cursor);
    return `/api/audit-events?${q}`;
  };
  const row = (e) => h('tr', {},
    h('td', { 'data-label': 'Time' }, timeCell(e.time)),
    h('td', { 'data-label': 'Actor' }, actorText(e.actor, names, me)),
    h('td', { 'data-label': 'Action' }, ACTION_LABEL[e.action] || e.action),
    h('td', { 'data-label': 'Target' }, targetText(e.target, e.details || {}, names)),
    h('td', { 'data-label': 'Client Address' }, e.clientAddress ? h('span', { class: 'mono' }, e.clientAddress) : h('span', { class: 'muted' }, '—')),
    h('td', { 'data-label': 'Details', class: 'description' }, detailsText(e) || h('span', { class: 'muted' }, '—')));
  const table = h('div', { class: 'card' }, h('table', { class: 'responsive' },
    h('caption', { class: 'visually-hidden' }, 'Audit events'),
    h('thead', {}, h('tr', {}, ['Time', 'Actor', 'Action', 'Target', 'Client Address', 'Details'].map((c) => h('th', { scope: 'col' }, c)))),
    body));

  const load = async (fresh) => {
    generation += 1;
    const mine = generation;
    if (fresh) cursor = null;
    more.disabled = true;
    try {
      const data = await api('GET', query());
      if (mine !== generation) return;
      if (fresh) body.replaceChildren();
      body.append(...data.items.map(row));
      cursor = data.nextCursor;
      more.hidden = !cursor;
      content.replaceChildren(body.children.length ? table : h('div', { class: 'card empty' },
        h('h2', {}, 'No events'),
        h('p', {}, admin ? 'Nothing matches these filters.' : 'No changes to your keys are on record.')));
    } catch (e) {
      if (mine === generation) content.replaceChildren(errorBox(e.message));
    } finally {
      if (mine === generation) more.disabled = false;
    }
  };
  for (const control of [userSelect, actionSelect]) {
    if (control) control.addEventListener('change', () => load(true));
  }
  more.addEventListener('click', () => load(false));
  await load(true);
}
