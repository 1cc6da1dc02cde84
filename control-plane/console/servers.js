// Servers: the MCP servers the signed-in person can reach, each with its
// connection URL and client snippets (the key left out, to paste in).

import { h, copyButton, errorBox, pageHeader } from './dom.js';
import { loadAccess } from './access.js';
import { connectionUrl, loadSnippets, snippetPanel } from './connect.js';
import { openDialog } from './dialog.js';

export async function serversPage(main, me) {
  const access = await loadAccess(me);
  const reach = access.reachable(me.id);
  const servers = access.servers.filter((s) => reach.has(s.name));
  main.append(pageHeader('Servers', 'The MCP servers you can reach. Connect a client to a server\'s URL with one of your API keys.',
    h('a', { class: 'button primary', href: '/api-keys' }, 'API Keys')));
  if (servers.length === 0) {
    main.append(h('div', { class: 'card empty' },
      h('h2', {}, 'No MCP servers yet'),
      h('p', {}, 'You cannot reach any MCP server yet. An admin grants access with an access rule; the servers then appear here.')));
    return;
  }
  let snippets = [];
  try {
    snippets = await loadSnippets();
  } catch (e) {
    main.append(errorBox(e.message));
  }
  const rows = servers.map((s) => {
    const url = connectionUrl(s.name);
    const show = h('button', { type: 'button', class: 'small', 'aria-label': `Client snippets for ${s.name}` }, 'Snippets');
    show.addEventListener('click', () => {
      const panel = snippetPanel(snippets, [s.name], () => null);
      const close = h('button', { type: 'button', class: 'primary' }, 'Close');
      const d = openDialog({ title: `Connect to ${s.name}`, wide: true, body: [panel.wrap], actions: [close] });
      close.addEventListener('click', () => d.close());
    });
    return h('tr', {},
      h('td', { 'data-label': 'Name' }, h('span', { class: 'mono' }, s.name)),
      h('td', { 'data-label': 'Display Name' }, s.displayName || s.name),
      h('td', { 'data-label': 'Description', class: 'description' }, s.description || h('span', { class: 'muted' }, '—')),
      h('td', { 'data-label': 'Connection URL' }, h('code', {}, url)),
      h('td', { class: 'actions' }, copyButton('Copy URL', () => url, `Copy connection URL for ${s.name}`), ' ', snippets.length ? show : null));
  });
  main.append(h('div', { class: 'card' }, h('table', { class: 'responsive' },
    h('caption', { class: 'visually-hidden' }, 'MCP servers you can reach'),
    h('thead', {}, h('tr', {}, ['Name', 'Display Name', 'Description', 'Connection URL'].map((c) => h('th', { scope: 'col' }, c)),
      h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, 'Actions')))),
    h('tbody', {}, rows))));
}
