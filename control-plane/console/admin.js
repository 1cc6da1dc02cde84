// User Management for admins: Users (list, create, change role, delete),
// MCP Servers and Access Rules (list, create, delete), so a deployment can
// be run from the console without curl.

import { api, list } from './api.js';
import { h, actionMenu, errorBox, field, pageHeader, toast, uid } from './dom.js';
import { confirmDialog, openDialog } from './dialog.js';
import { timeCell } from './format.js';

/** A table of `items` in a card, or an empty state. */
function table(caption, columns, items, row, empty) {
  if (items.length === 0) return h('div', { class: 'card empty' }, h('h2', {}, empty[0]), h('p', {}, empty[1]));
  return h('div', { class: 'card' }, h('table', { class: 'responsive' },
    h('caption', { class: 'visually-hidden' }, caption),
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col' }, c)), h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, 'Actions')))),
    h('tbody', {}, items.map(row))));
}

/** A create dialog: `fields` are field() results, `build` turns them into
 *  the request body (or throws a message), `post` sends it. */
function createDialog({ title, fields, extra = [], submitLabel, build, post, done }) {
  const formId = uid('form');
  const error = h('div', { class: 'alert error', role: 'alert', hidden: true });
  const form = h('form', { id: formId, novalidate: true }, error, fields.map((f) => f.wrap), extra);
  const cancel = h('button', { type: 'button' }, 'Cancel');
  const submit = h('button', { type: 'submit', class: 'primary', form: formId }, submitLabel);
  const d = openDialog({ title, body: [form], actions: [cancel, submit] });
  cancel.addEventListener('click', () => d.close());
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.hidden = true;
    let body;
    try {
      body = build();
    } catch (message) {
      error.textContent = String(message);
      error.hidden = false;
      return;
    }
    submit.disabled = true;
    try {
      await post(body);
      d.close();
      done();
    } catch (e) {
      error.textContent = e.message;
      error.hidden = false;
      submit.disabled = false;
    }
  });
}

function deleteAction(what, name, path, reload) {
  return actionMenu(`Actions for ${what.toLowerCase()} ${name}`, [{
    label: 'Delete',
    danger: true,
    run: async () => {
      const deleted = await confirmDialog({
        title: `Delete ${what}`,
        message: `Delete ${what.toLowerCase()} “${name}”? This cannot be undone.`,
        confirmLabel: 'Delete',
        run: () => api('DELETE', path),
      });
      if (deleted) {
        toast(`${what} “${name}” deleted.`);
        reload();
      }
    },
  }]);
}

/** Runs `draw` now and again whenever the page's data changes. */
async function page(main, header, draw) {
  const content = h('div');
  main.append(header, content);
  const reload = async () => {
    try {
      content.replaceChildren(await draw(reload));
    } catch (e) {
      content.replaceChildren(errorBox(e.message));
    }
  };
  await reload();
  return reload;
}

export async function usersPage(main, me) {
  const add = h('button', { type: 'button', class: 'primary' }, 'Create User');
  let reload = () => {};
  add.addEventListener('click', () => {
    const username = field('Username', h('input', { type: 'text', required: true, autocomplete: 'off' }));
    const email = field('Email', h('input', { type: 'email', autocomplete: 'off' }), 'Optional.');
    const role = field('Role', h('select', {}, h('option', { value: 'user' }, 'User'), h('option', { value: 'admin' }, 'Admin')));
    createDialog({
      title: 'Create User',
      fields: [username, email, role],
      submitLabel: 'Create User',
      build() {
        if (!username.input.value.trim()) throw 'Enter a username.';
        return { username: username.input.value.trim(), email: email.input.value.trim() || undefined, role: role.input.value };
      },
      post: (body) => api('POST', '/api/users', body),
      done: () => { toast('User created.'); reload(); },
    });
  });
  reload = await page(main, pageHeader('Users', 'People who can sign in. Admins manage everything; users manage their own keys.', add), async (again) => {
    const users = await list('/api/users');
    return table('Users', ['Username', 'Email', 'Role', 'Created'], users, (u) => {
      const roleId = uid('role');
      const role = h('select', { id: roleId, 'aria-label': `Role of ${u.username}`, disabled: u.roleSource === 'builtin' || u.id === me.id },
        h('option', { value: 'user', selected: u.role === 'user' }, 'User'),
        h('option', { value: 'admin', selected: u.role === 'admin' }, 'Admin'));
      role.addEventListener('change', async () => {
        try {
          await api('PATCH', `/api/users/${u.id}`, { role: role.value });
          toast(`${u.username} is now ${role.value === 'admin' ? 'an admin' : 'a user'}.`);
        } catch (e) {
          toast(e.message);
          role.value = u.role;
        }
        again();
      });
      return h('tr', {},
        h('td', { 'data-label': 'Username' }, u.username),
        h('td', { 'data-label': 'Email' }, u.email || h('span', { class: 'muted' }, '—')),
        h('td', { 'data-label': 'Role' }, role),
        h('td', { 'data-label': 'Created' }, timeCell(u.createdAt)),
        h('td', { class: 'actions' }, u.roleSource === 'builtin' || u.id === me.id ? null : deleteAction('User', u.username, `/api/users/${u.id}`, again)));
    }, ['No users yet', 'Create a user, or let people sign in with OpenID Connect.']);
  });
}

export async function mcpServersPage(main) {
  const add = h('button', { type: 'button', class: 'primary' }, 'Add MCP Server');
  let reload = () => {};
  add.addEventListener('click', () => {
    const name = field('Name', h('input', { type: 'text', required: true, autocomplete: 'off' }), 'As in the URL: /mcp-connect/<name>/mcp.');
    const display = field('Display Name', h('input', { type: 'text', autocomplete: 'off' }), 'Optional.');
    const description = field('Description', h('textarea', {}), 'Optional.');
    createDialog({
      title: 'Add MCP Server',
      fields: [name, display, description],
      submitLabel: 'Add MCP Server',
      build() {
        if (!name.input.value.trim()) throw 'Enter the server\'s name.';
        return { name: name.input.value.trim(), displayName: display.input.value.trim() || undefined, description: description.input.value.trim() || undefined };
      },
      post: (body) => api('POST', '/api/mcp-servers', body),
      done: () => { toast('MCP server added.'); reload(); },
    });
  });
  reload = await page(main, pageHeader('MCP Servers', 'The servers keys can be scoped to. Envoy needs a route /mcp-connect/<name>/ to each server.', add), async (again) => {
    const servers = await list('/api/mcp-servers');
    return table('MCP servers', ['Name', 'Display Name', 'Description', 'Created'], servers, (s) => h('tr', {},
      h('td', { 'data-label': 'Name' }, h('span', { class: 'mono' }, s.name)),
      h('td', { 'data-label': 'Display Name' }, s.displayName),
      h('td', { 'data-label': 'Description', class: 'description' }, s.description || h('span', { class: 'muted' }, '—')),
      h('td', { 'data-label': 'Created' }, timeCell(s.createdAt)),
      h('td', { class: 'actions' }, deleteAction('MCP Server', s.name, `/api/mcp-servers/${encodeURIComponent(s.name)}`, again))),
    ['No MCP servers yet', 'Add the MCP servers your Envoy routes to, then give people access with an access rule.']);
  });
}

function subjectText(subject, users) {
  if (subject === '*') return 'Everyone';
  const id = subject.startsWith('user:') ? Number(subject.slice(5)) : NaN;
  const user = users.find((u) => u.id === id);
  return user ? user.username : subject;
}

export async function accessRulesPage(main) {
  const add = h('button', { type: 'button', class: 'primary' }, 'Create Access Rule');
  let users = [];
  let servers = [];
  let reload = () => {};
  add.addEventListener('click', async () => {
    try {
      [users, servers] = await Promise.all([list('/api/users'), list('/api/mcp-servers')]);
    } catch (e) {
      toast(e.message);
      return;
    }
    const name = field('Name', h('input', { type: 'text', required: true, autocomplete: 'off' }));
    const checklist = (legend, allLabel, options) => {
      const all = h('input', { type: 'checkbox', value: '*' });
      const boxes = options.map(([value, label]) => h('input', { type: 'checkbox', value }));
      return {
        node: h('fieldset', {}, h('legend', {}, legend), h('label', { class: 'choice' }, all, allLabel),
          h('div', { class: 'checklist' }, boxes.map((b, i) => h('label', { class: 'choice' }, b, options[i][1])))),
        picked: () => (all.checked ? ['*'] : boxes.filter((b) => b.checked).map((b) => b.value)),
      };
    };
    const serverList = checklist('MCP Servers', 'All MCP Servers', servers.map((s) => [s.name, s.name]));
    const subjectList = checklist('Subjects', 'Everyone', users.map((u) => [`user:${u.id}`, u.username]));
    createDialog({
      title: 'Create Access Rule',
      fields: [name],
      extra: [serverList.node, subjectList.node],
      submitLabel: 'Create Access Rule',
      build() {
        if (!name.input.value.trim()) throw 'Enter a name for the rule.';
        const mcpServerIds = serverList.picked();
        const subjects = subjectList.picked();
        if (!mcpServerIds.length) throw 'Select at least one MCP server, or All MCP Servers.';
        if (!subjects.length) throw 'Select at least one user, or Everyone.';
        return { name: name.input.value.trim(), mcpServerIds, subjects };
      },
      post: (body) => api('POST', '/api/access-rules', body),
      done: () => { toast('Access rule created.'); reload(); },
    });
  });
  reload = await page(main, pageHeader('Access Rules', 'Who can reach which MCP servers. A person reaches the union of the rules that name them.', add), async (again) => {
    const rules = await list('/api/access-rules');
    [users, servers] = await Promise.all([list('/api/users'), list('/api/mcp-servers')]);
    return table('Access rules', ['Name', 'MCP Servers', 'Subjects', 'Created'], rules, (r) => h('tr', {},
      h('td', { 'data-label': 'Name' }, r.name),
      h('td', { 'data-label': 'MCP Servers' }, r.mcpServerIds.includes('*') ? 'All MCP Servers' : r.mcpServerIds.join(', ')),
      h('td', { 'data-label': 'Subjects' }, r.subjects.map((s) => subjectText(s, users)).join(', ')),
      h('td', { 'data-label': 'Created' }, timeCell(r.createdAt)),
      h('td', { class: 'actions' }, deleteAction('Access Rule', r.name, `/api/access-rules/${r.id}`, again))),
    ['No access rules yet', 'Nobody reaches any MCP server until a rule grants it. Create a rule that names servers and people.']);
  });
}
