// Small DOM helpers. Text always goes in as text nodes or textContent,
// never parsed as HTML, so data from the API cannot become markup.

/** Builds an element: h('button', {class: 'primary', onclick: f}, 'Save'). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'class') el.className = value;
    else if (name === 'text') el.textContent = value;
    else if (name.startsWith('on')) el.addEventListener(name.slice(2), value);
    else if (name === 'dataset') Object.assign(el.dataset, value);
    else if (name === 'checked' || name === 'selected' || name === 'value') el[name] = value;
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

let uniqueCounter = 0;
/** A fresh id for label/aria wiring. */
export function uid(prefix) {
  uniqueCounter += 1;
  return `${prefix}-${uniqueCounter}`;
}

/** Shows a short status message at the bottom of the page. */
export function toast(message) {
  let region = document.getElementById('toast');
  if (!region) {
    region = h('div', { id: 'toast', class: 'toast', role: 'status', 'aria-live': 'polite' });
    document.body.append(region);
  }
  region.textContent = message;
  clearTimeout(region.hideTimer);
  region.hideTimer = setTimeout(() => { region.textContent = ''; }, 4000);
}

/** An error box with role=alert. */
export function errorBox(message) {
  return h('div', { class: 'alert error', role: 'alert' }, message);
}

/** A labelled form field: returns {wrap, input, error}. */
export function field(label, input, hint) {
  const id = input.id || uid('field');
  input.id = id;
  const hintEl = hint ? h('p', { class: 'hint', id: `${id}-hint` }, hint) : null;
  const error = h('p', { class: 'field-error', id: `${id}-error`, hidden: true });
  const described = [hintEl ? hintEl.id : null, error.id].filter(Boolean).join(' ');
  input.setAttribute('aria-describedby', described);
  const wrap = h('div', { class: 'field' }, h('label', { for: id }, label), input, hintEl, error);
  return {
    wrap,
    input,
    setError(message) {
      error.textContent = message || '';
      error.hidden = !message;
      if (message) input.setAttribute('aria-invalid', 'true');
      else input.removeAttribute('aria-invalid');
    },
  };
}

/** Copies text, with a fallback where the Clipboard API is missing (plain
 *  HTTP on a host other than localhost). Resolves true when it copied. */
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // Denied: fall through to the selection-based copy.
    }
  }
  const area = h('textarea', { readonly: true, class: 'visually-hidden', 'aria-hidden': 'true', tabindex: '-1' });
  area.value = text;
  const host = document.activeElement?.closest('dialog') || document.body;
  host.append(area);
  area.select();
  let copied = false;
  try {
    copied = document.execCommand('copy');
  } catch {
    copied = false;
  }
  area.value = '';
  area.remove();
  return copied;
}

/** A Copy button that says "Copied" for a moment after it copied. */
export function copyButton(label, getText, accessibleName) {
  const button = h('button', { type: 'button', class: 'small', 'aria-label': accessibleName || label }, label);
  button.addEventListener('click', async () => {
    const ok = await copyText(getText());
    button.textContent = ok ? 'Copied' : 'Copy failed: select the text and press Ctrl+C';
    toast(ok ? 'Copied to the clipboard.' : 'Could not copy: select the text and press Ctrl+C.');
    setTimeout(() => { button.textContent = label; }, 2500);
  });
  return button;
}

/** A three-dot menu for one row: `label` is its accessible name (naming the
 *  row), `items` are [{label, danger, run}]. Arrow keys move, Escape closes. */
export function actionMenu(label, items) {
  const menuId = uid('menu');
  const button = h('button', {
    type: 'button', class: 'icon-button', 'aria-label': label, 'aria-haspopup': 'menu',
    'aria-expanded': 'false', 'aria-controls': menuId,
  }, h('span', { 'aria-hidden': 'true' }, '⋯'));
  const entries = items.map((item) => h('button', {
    type: 'button', role: 'menuitem', class: item.danger ? 'danger' : null,
  }, item.label));
  const menu = h('div', { class: 'menu', role: 'menu', id: menuId, 'aria-label': label, hidden: true }, entries);
  const anchor = h('div', { class: 'menu-anchor' }, button, menu);
  const close = (refocus) => {
    menu.hidden = true;
    button.setAttribute('aria-expanded', 'false');
    document.removeEventListener('click', outside, true);
    if (refocus) button.focus();
  };
  const outside = (event) => {
    if (!anchor.contains(event.target)) close(false);
  };
  button.addEventListener('click', () => {
    if (!menu.hidden) {
      close(false);
      return;
    }
    menu.hidden = false;
    button.setAttribute('aria-expanded', 'true');
    entries[0].focus();
    document.addEventListener('click', outside, true);
  });
  entries.forEach((entry, at) => {
    entry.addEventListener('click', () => {
      close(true);
      items[at].run();
    });
  });
  menu.addEventListener('keydown', (event) => {
    const at = entries.indexOf(document.activeElement);
    if (event.key === 'Escape') {
      event.stopPropagation();
      close(true);
    } else if (event.key === 'ArrowDown') {
      event.preventDefault();
      entries[(at + 1) % entries.length].focus();
    } else if (event.key === 'ArrowUp') {
      event.preventDefault();
      entries[(at - 1 + entries.length) % entries.length].focus();
    } else if (event.key === 'Tab') {
      close(false);
    }
  });
  return anchor;
}

/** A page heading with its lead text and an optional primary action. */
export function pageHeader(title, lead, action) {
  return h('div', { class: 'page-header' }, h('div', {}, h('h1', {}, title), lead ? h('p', {}, lead) : null), action || null);
}
