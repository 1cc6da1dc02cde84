// Right after a key is created: the shown-once dialog with the full key, a
// Copy button, and for each server the key opens its connection URL and
// ready-to-paste client snippets. The snippets come from
// /console/snippets/ (the same templates the README shows); the key goes
// into a snippet only when the person ticks "Fill in the key". When the
// dialog closes it leaves the page, and the key with it.

import { h, copyButton, uid } from './dom.js';
import { openDialog } from './dialog.js';

let manifest = null;
const templates = new Map();

/** The snippet manifest and templates, loaded once. */
export async function loadSnippets() {
  if (!manifest) {
    const response = await fetch('/console/snippets/snippets.json', { credentials: 'same-origin' });
    manifest = await response.json();
    await Promise.all(manifest.snippets.map(async (s) => {
      const text = await (await fetch(`/console/snippets/${s.file}`, { credentials: 'same-origin' })).text();
      templates.set(s.id, text);
    }));
  }
  return manifest.snippets;
}

/** A server's connection URL at this console's public address. */
export function connectionUrl(server) {
  return `${location.origin}/mcp-connect/${encodeURIComponent(server)}/mcp`;
}

/** A snippet for `server`; with the key filled in when `key` is given. */
export function renderSnippet(snippet, server, key) {
  const keyText = key ? snippet.keyLiteral.replace('{key}', key) : snippet.keyReference;
  return templates.get(snippet.id)
    .replaceAll('{{SERVER}}', server)
    .replaceAll('{{URL}}', connectionUrl(server))
    .replaceAll('{{ORIGIN}}', location.origin)
    .replaceAll('{{KEY}}', keyText);
}

/** Tabs of client snippets for the servers in `servers`. `getKey` returns
 *  the key, or null when it must not be filled in. */
export function snippetPanel(snippets, servers, getKey, fillControl) {
  const wrap = h('div', { class: 'connect' });
  let server = servers[0];
  let current = snippets[0];
  const pre = h('pre', { class: 'snippet', tabindex: '0' });
  const caption = h('p', { class: 'hint' });
  const urlCode = h('code', {});
  const draw = () => {
    urlCode.textContent = connectionUrl(server);
    pre.textContent = renderSnippet(current, server, getKey());
    pre.setAttribute('aria-label', `${current.label} snippet for ${server}`);
    caption.textContent = current.caption;
  };
  if (servers.length > 1) {
    const id = uid('server');
    const select = h('select', { id }, servers.map((s) => h('option', { value: s }, s)));
    select.addEventListener('change', () => { server = select.value; draw(); });
    wrap.append(h('div', { class: 'field' }, h('label', { for: id }, 'MCP Server'), select));
  }
  wrap.append(h('p', { class: 'label' }, 'Connection URL'),
    h('div', { class: 'url' }, urlCode, copyButton('Copy', () => connectionUrl(server), 'Copy connection URL')));
  const tabList = h('div', { class: 'tabs', role: 'tablist', 'aria-label': 'MCP clients' });
  const tabs = snippets.map((s) => {
    const tab = h('button', { type: 'button', role: 'tab', 'aria-selected': String(s === current), tabindex: s === current ? '0' : '-1' }, s.label);
    tab.addEventListener('click', () => select(s, tab));
    return tab;
  });
  const select = (s, tab) => {
    current = s;
    for (const t of tabs) {
      t.setAttribute('aria-selected', String(t === tab));
      t.tabIndex = t === tab ? 0 : -1;
    }
    draw();
  };
  tabList.addEventListener('keydown', (event) => {
    const at = tabs.indexOf(document.activeElement);
    if (at < 0 || (event.key !== 'ArrowRight' && event.key !== 'ArrowLeft')) return;
    const next = (at + (event.key === 'ArrowRight' ? 1 : -1) + tabs.length) % tabs.length;
    tabs[next].focus();
    select(snippets[next], tabs[next]);
  });
  tabList.append(...tabs);
  const panel = h('div', { role: 'tabpanel', 'aria-label': 'Snippet' }, caption, fillControl || null, pre,
    copyButton('Copy snippet', () => pre.textContent, 'Copy snippet'));
  wrap.append(tabList, panel);
  draw();
  return { wrap, redraw: draw };
}

/** The shown-once dialog for a freshly created (or rotated) key.
 *  `servers`: the names the key opens now; `title` and `note` (a node under
 *  the key) let a rotation say what became of the old key. */
export async function showCreatedKey({ created, servers, title = 'API Key Created', note = null }) {
  let key = created.key;
  const snippets = await loadSnippets().catch(() => []);
  const keyCode = h('code', { class: 'key', id: uid('key') }, key);
  const fill = h('input', { type: 'checkbox', id: uid('fill') });
  const body = [
    h('div', { class: 'alert warning', role: 'note' },
      h('strong', {}, 'Copy and save this key now. '),
      'It is shown only once and cannot be retrieved later.'),
    h('p', { class: 'label' }, `API key “${created.name}”`),
    h('div', { class: 'secret' }, keyCode, copyButton('Copy', () => key, 'Copy API key')),
    note,
  ];
  let panel = null;
  if (servers.length && snippets.length) {
    const fillLabel = h('label', { class: 'choice' }, fill, 'Fill in the key in the snippets');
    panel = snippetPanel(snippets, servers, () => (fill.checked ? key : null), fillLabel);
    fill.addEventListener('change', () => panel.redraw());
    body.push(h('h3', {}, 'Connect a client'), panel.wrap);
  } else if (!servers.length) {
    body.push(h('p', { class: 'hint' }, 'The key opens no MCP server yet: it opens each server its owner is given access to later.'));
  }
  const done = h('button', { type: 'button', class: 'primary' }, 'Done');
  const d = openDialog({
    title,
    wide: true,
    body,
    actions: [done],
    onClose: () => {
      // The dialog has left the page; drop the last reference too.
      key = null;
      created.key = null;
    },
  });
  done.addEventListener('click', () => d.close());
}
