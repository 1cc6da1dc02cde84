// API Keys: the signed-in person's own keys (/api-keys) and, for admins,
// every key with its owner (/admin/api-keys, paged on the server, filtered
// by user). A filter box and sortable columns keep a long list readable.

import { api, list } from './api.js';
import { h, actionMenu, errorBox, pageHeader, toast } from './dom.js';
import { confirmDialog, openDialog } from './dialog.js';
import { expiryState, timeCell } from './format.js';
import { loadAccess, keyServers } from './access.js';
import { openCreateKeyDialog } from './key-create.js';
import { lifecycleFacts, lifecycleMenuItems, statusCell, statusLabel } from './key-actions.js';

const PAGE_SIZE = 50;
const LAST_USED_NOTE = 'The edge reports use in batches, so Last Used lags by its usage flush interval (a few seconds).';

export function ownKeysPage(main, me) {
  return keysPage(main, me, false);
}

export function adminKeysPage(main, me) {
  return keysPage(main, me, true);
}

function serverCount(key, reach) {
  if (key.mcpServerIds.includes('*')) return 'All';
  return String(keyServers(key, reach).filter((s) => s.reachable).length);
}

function expiresCell(key) {
  const state = expiryState(key.expiresAt);
  const cell = [timeCell(key.expiresAt)];
  if (state === 'expired') cell.push(h('span', { class: 'badge danger' }, 'Expired'));
  if (state === 'soon') cell.push(h('span', { class: 'badge warn' }, 'Expires soon'));
  return cell;
}

const COLUMNS = [
  { id: 'name', label: 'Name', value: (k) => k.name.toLowerCase() },
  { id: 'description', label: 'Description', value: (k) => k.description.toLowerCase() },
  { id: 'user', label: 'User', value: (k) => (k.username || '').toLowerCase(), admin: true },
  { id: 'servers', label: 'Servers', value: (k, reach) => (k.mcpServerIds.includes('*') ? Infinity : keyServers(k, reach).filter((s) => s.reachable).length) },
  { id: 'created', label: 'Created', value: (k) => k.createdAt },
  { id: 'lastUsed', label: 'Last Used', value: (k) => k.lastUsedAt || '' },
  { id: 'expires', label: 'Expires', value: (k) => k.expiresAt || '9999' },
  { id: 'status', label: 'Status', value: (k) => statusLabel(k) },
];

async function keysPage(main, me, admin) {
  const base = admin ? '/api/admin-api-keys' : '/api/api-keys';
  const state = { items: [], total: 0, offset: 0, userId: '', filter: '', sort: 'created', descending: true };
  const [access, users] = await Promise.all([loadAccess(me), admin ? list('/api/users') : Promise.resolve([])]);
  const reachOf = (key) => access.reachable(key.userId);

  const createButton = h('button', { type: 'button', class: 'primary' }, 'Create API Key');
  const lead = admin
    ? 'Every API key in this deployment, with the user who owns it.'
    : 'Keys for scripts, automation and MCP clients to connect to your MCP servers.';
  const errors = h('div');
  const filterInput = h('input', { type: 'search', id: 'key-filter', placeholder: 'Name or description', autocomplete: 'off' });
  const count = h('span', { class: 'count', 'aria-live': 'polite' });
  const toolbar = h('div', { class: 'toolbar' },
    h('div', { class: 'field' }, h('label', { for: 'key-filter' }, 'Filter keys'), filterInput));
  let userSelect = null;
  if (admin) {
    userSelect = h('select', { id: 'key-user' },
      h('option', { value: '' }, 'All users'),
      users.map((u) => h('option', { value: String(u.id) }, u.username)));
    toolbar.append(h('div', { class: 'field' }, h('label', { for: 'key-user' }, 'User'), userSelect));
  }
  toolbar.append(count);
  const content = h('div', { class: 'card' });
  main.append(pageHeader('API Keys', lead, createButton), errors, toolbar, content);
  createButton.addEventListener('click', () => create());
  filterInput.addEventListener('input', () => { state.filter = filterInput.value; draw(); });
  if (userSelect) {
    userSelect.addEventListener('change', () => { state.userId = userSelect.value; state.offset = 0; load(); });
  }

  async function load() {
    errors.replaceChildren();
    try {
      if (admin) {
        const query = new URLSearchParams({ limit: String(PAGE_SIZE), offset: String(state.offset) });
        if (state.userId) query.set('userId', state.userId);
        const data = await api('GET', `${base}?${query}`);
        state.items = data.items || [];
        state.total = typeof data.total === 'number' ? data.total : state.items.length;
      } else {
        state.items = await list(base);
        state.total = state.items.length;
      }
    } catch (e) {
      errors.replaceChildren(errorBox(e.message));
      state.items = [];
      state.total = 0;
    }
    draw();
  }

  function visibleRows() {
    const needle = state.filter.trim().toLowerCase();
    const rows = state.items.filter((k) => !needle
      || k.name.toLowerCase().includes(needle)
      || k.description.toLowerCase().includes(needle)
      || (k.username || '').toLowerCase().includes(needle));
    const column = COLUMNS.find((c) => c.id === state.sort);
    rows.sort((a, b) => {
      const [x, y] = [column.value(a, reachOf(a)), column.value(b, reachOf(b))];
      const order = x < y ? -1 : x > y ? 1 : 0;
      return state.descending ? -order : order;
    });
    return rows;
  }

  function header(column) {
    const sorted = state.sort === column.id;
    const th = h('th', { scope: 'col', 'aria-sort': sorted ? (state.descending ? 'descending' : 'ascending') : 'none' });
    const button = h('button', { type: 'button', class: 'sort' }, column.label);
    button.addEventListener('click', () => {
      state.descending = sorted ? !state.descending : column.id === 'created' || column.id === 'lastUsed';
      state.sort = column.id;
      draw();
      content.querySelector(`th[data-column="${column.id}"] button`)?.focus();
    });
    th.dataset.column = column.id;
    if (column.id === 'lastUsed') {
      button.setAttribute('title', LAST_USED_NOTE);
      button.setAttribute('aria-description', LAST_USED_NOTE);
      button.classList.add('info');
    }
    th.append(button);
    return th;
  }

  function row(key) {
    const reach = reachOf(key);
    const expired = expiryState(key.expiresAt) === 'expired';
    const nameButton = h('button', { type: 'button', class: 'link-button' }, key.name);
    nameButton.addEventListener('click', () => showKey(key));
    const cells = [
      h('td', { 'data-label': 'Name' }, nameButton),
      h('td', { 'data-label': 'Description', class: 'description' }, key.description || h('span', { class: 'muted' }, '—')),
      admin ? h('td', { 'data-label': 'User' }, key.username || String(key.userId)) : null,
      h('td', { 'data-label': 'Servers' }, serverCount(key, reach)),
      h('td', { 'data-label': 'Created' }, timeCell(key.createdAt)),
      h('td', { 'data-label': 'Last Used' }, timeCell(key.lastUsedAt)),
      h('td', { 'data-label': 'Expires' }, expiresCell(key)),
      h('td', { 'data-label': 'Status' }, statusCell(key)),
      h('td', { class: 'actions' }, actionMenu(`Actions for API key ${key.name}`, [
        { label: 'View', run: () => showKey(key) },
        ...lifecycleMenuItems({
          key,
          base,
          owner: admin ? key.username : null,
          servers: opensNow(key, reach),
          done: changed,
          onError: (message) => errors.replaceChildren(errorBox(message)),
        }),
        { label: 'Delete', danger: true, run: () => deleteKey(key) },
      ])),
    ];
    return h('tr', { class: expired || key.status === 'disabled' ? 'expired' : null, dataset: { keyId: String(key.id) } }, cells);
  }

  function draw() {
    const rows = visibleRows();
    if (state.total === 0 && !state.userId) {
      content.replaceChildren(emptyState());
      count.textContent = '';
      return;
    }
    const columns = COLUMNS.filter((c) => admin || !c.admin);
    const table = h('table', { class: 'responsive' },
      h('caption', { class: 'visually-hidden' }, admin ? 'All API keys' : 'Your API keys'),
      h('thead', {}, h('tr', {}, columns.map(header), h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, 'Actions')))),
      h('tbody', {}, rows.map(row)));
    const parts = [table];
    if (rows.length === 0) parts.push(h('p', { class: 'empty muted' }, 'No key matches the filter.'));
    if (admin && state.total > PAGE_SIZE) parts.push(pager());
    content.replaceChildren(...parts);
    const shown = admin ? `${state.items.length} of ${state.total}` : `${state.total}`;
    count.textContent = `${shown} ${state.total === 1 ? 'key' : 'keys'}`;
  }

  function pager() {
    const previous = h('button', { type: 'button', class: 'small', disabled: state.offset === 0 }, 'Previous');
    const next = h('button', { type: 'button', class: 'small', disabled: state.offset + PAGE_SIZE >= state.total }, 'Next');
    previous.addEventListener('click', () => { state.offset = Math.max(0, state.offset - PAGE_SIZE); load(); });
    next.addEventListener('click', () => { state.offset += PAGE_SIZE; load(); });
    const first = state.offset + 1;
    const last = Math.min(state.offset + PAGE_SIZE, state.total);
    return h('nav', { class: 'pager', 'aria-label': 'Pages' }, h('span', { class: 'muted' }, `${first}–${last} of ${state.total}`), previous, next);
  }

  function emptyState() {
    const button = h('button', { type: 'button', class: 'primary' }, 'Create API Key');
    button.addEventListener('click', create);
    return h('div', { class: 'empty' },
      h('h2', {}, 'No API keys yet'),
      h('p', {}, 'An API key lets a script, an automation tool or an MCP client such as VS Code connect to MCP servers without a browser sign-in. Each key is scoped to the servers you choose, can expire, and is shown only once.'),
      button);
  }

  async function showKey(key) {
    let detail = key;
    try {
      detail = await api('GET', `${base}/${key.id}`);
    } catch (e) {
      errors.replaceChildren(errorBox(e.message));
      return;
    }
    const reach = reachOf(detail);
    const servers = keyServers(detail, reach);
    const all = detail.mcpServerIds.includes('*');
    const facts = h('dl', { class: 'facts' },
      admin ? [h('dt', {}, 'User'), h('dd', {}, detail.username || String(detail.userId))] : null,
      h('dt', {}, 'Description'), h('dd', {}, detail.description || '—'),
      h('dt', {}, 'Created'), h('dd', {}, timeCell(detail.createdAt)),
      h('dt', {}, 'Last Used'), h('dd', {}, timeCell(detail.lastUsedAt)),
      h('dt', {}, 'Expires'), h('dd', {}, expiresCell(detail)),
      lifecycleFacts(detail));
    const serverItems = servers.map((s) => h('li', {}, h('span', { class: 'mono' }, s.name),
      s.reachable ? h('span', { class: 'badge ok' }, 'Reachable') : h('span', { class: 'badge danger' }, 'No access')));
    const lost = servers.filter((s) => !s.reachable).length;
    const done = h('button', { type: 'button', class: 'primary' }, 'Close');
    const d = openDialog({
      title: detail.name,
      body: [
        facts,
        h('h3', {}, 'MCP Server Access'),
        all ? h('p', { class: 'hint' }, 'All MCP Servers: every server the owner can reach, now and later.') : null,
        lost ? h('p', { class: 'hint' }, `The owner can no longer reach ${lost === 1 ? 'one of these servers' : `${lost} of these servers`}; the key does not open ${lost === 1 ? 'it' : 'them'}.`) : null,
        servers.length ? h('ul', { class: 'server-list' }, serverItems) : h('p', { class: 'muted' }, 'No MCP server at the moment.'),
      ],
      actions: [done],
    });
    done.addEventListener('click', () => d.close());
  }

  /** The server names a key opens now (for the snippets of a rotated key). */
  function opensNow(key, reach) {
    return keyServers(key, reach).filter((s) => s.reachable).map((s) => s.name);
  }

  /** After a lifecycle action: say what happened and show the list as it is now. */
  async function changed(message) {
    if (message) toast(message);
    await load();
  }

  async function deleteKey(key) {
    const deleted = await confirmDialog({
      title: 'Delete API Key',
      message: `Delete the API key “${key.name}”${admin && key.username ? ` of ${key.username}` : ''}? Clients that use it stop working at once. This cannot be undone.`,
      confirmLabel: 'Delete',
      run: () => api('DELETE', `${base}/${key.id}`),
    });
    if (deleted) {
      toast(`API key “${key.name}” deleted.`);
      await load();
      filterInput.focus();
    }
  }

  function create() {
    openCreateKeyDialog({
      me,
      admin,
      users,
      access,
      presetUserId: state.userId,
      onCreated: load,
    });
  }

  await load();
}
