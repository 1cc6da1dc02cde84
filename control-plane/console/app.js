// The console's shell: who is signed in (the profile menu), the sidebar
// (User Management for admins), and the page the path names. Every page is
// a full load of the same shell, so links, reload and history behave as on
// any website.

import { api, ApiError } from './api.js';
import { h, errorBox } from './dom.js';
import { ownKeysPage, adminKeysPage } from './keys.js';
import { serversPage } from './servers.js';
import { usersPage, mcpServersPage, accessRulesPage } from './admin.js';
import { auditPage } from './audit.js';
import { keyPolicyPage } from './key-policy.js';

const PAGES = {
  '/api-keys': { title: 'API Keys', render: ownKeysPage },
  '/servers': { title: 'Servers', render: serversPage },
  '/admin/api-keys': { title: 'API Keys', render: adminKeysPage, admin: true },
  '/admin/users': { title: 'Users', render: usersPage, admin: true },
  '/admin/mcp-servers': { title: 'MCP Servers', render: mcpServersPage, admin: true },
  '/admin/access-rules': { title: 'Access Rules', render: accessRulesPage, admin: true },
  '/audit-log': { title: 'Audit Log', render: auditPage },
  '/admin/key-policy': { title: 'Key Policy', render: keyPolicyPage, admin: true },
};

function initials(me) {
  const name = me.username || me.email || '?';
  return name.slice(0, 2).toUpperCase();
}

function setUpProfile(me) {
  const button = document.getElementById('profile-button');
  const menu = document.getElementById('profile-menu');
  button.textContent = initials(me);
  button.setAttribute('aria-label', `Profile menu for ${me.username}`);
  document.getElementById('profile-name').textContent = me.username;
  document.getElementById('profile-detail').textContent = [me.email, me.role === 'admin' ? 'Admin' : 'User'].filter(Boolean).join(' · ');
  document.getElementById('profile').hidden = false;
  const items = () => [...menu.querySelectorAll('[role="menuitem"]')];
  const setOpen = (open, focusFirst) => {
    menu.hidden = !open;
    button.setAttribute('aria-expanded', String(open));
    if (open && focusFirst) items()[0].focus();
  };
  button.addEventListener('click', () => setOpen(menu.hidden, true));
  menu.addEventListener('keydown', (event) => {
    const list = items();
    const at = list.indexOf(document.activeElement);
    if (event.key === 'Escape') {
      setOpen(false);
      button.focus();
    } else if (event.key === 'ArrowDown') {
      event.preventDefault();
      list[(at + 1) % list.length].focus();
    } else if (event.key === 'ArrowUp') {
      event.preventDefault();
      list[(at - 1 + list.length) % list.length].focus();
    }
  });
  document.addEventListener('click', (event) => {
    if (!document.getElementById('profile').contains(event.target)) setOpen(false);
  });
  document.getElementById('sign-out').addEventListener('click', async () => {
    try {
      await api('POST', '/auth/logout', undefined, { redirectOn401: false });
    } catch (e) {
      if (!(e instanceof ApiError) || e.status !== 401) {
        document.getElementById('main').prepend(errorBox(e.message));
        return;
      }
    }
    location.assign('/signin');
  });
}

function setUpNav(me) {
  const admin = me.role === 'admin';
  document.getElementById('nav-person').hidden = admin;
  document.getElementById('nav-admin-servers').hidden = !admin;
  document.getElementById('nav-admin').hidden = !admin;
  for (const link of document.querySelectorAll('.sidebar a')) {
    if (link.getAttribute('href') === location.pathname) link.setAttribute('aria-current', 'page');
  }
  const toggle = document.getElementById('nav-toggle');
  const sidebar = document.getElementById('sidebar');
  toggle.addEventListener('click', () => {
    const open = !sidebar.classList.contains('open');
    sidebar.classList.toggle('open', open);
    toggle.setAttribute('aria-expanded', String(open));
  });
}

async function start() {
  const main = document.getElementById('main');
  let me;
  try {
    me = await api('GET', '/api/me');
  } catch (e) {
    if (e.status !== 401) main.replaceChildren(errorBox(e.message));
    return;
  }
  setUpProfile(me);
  setUpNav(me);
  const page = PAGES[location.pathname] || PAGES['/api-keys'];
  document.title = `${page.title} · keygate`;
  main.replaceChildren();
  if (page.admin && me.role !== 'admin') {
    main.append(
      h('div', { class: 'page-header' }, h('div', {}, h('h1', {}, 'Not allowed'))),
      h('div', { class: 'alert error', role: 'alert' }, 'This page needs the admin role. Your own keys are under API Keys.'),
      h('a', { class: 'button', href: '/api-keys' }, 'Go to API Keys'),
    );
  } else {
    try {
      await page.render(main, me);
    } catch (e) {
      main.append(errorBox(e.message));
    }
  }
  main.removeAttribute('aria-busy');
}

start();
