// Modal dialogs on the native <dialog>: the rest of the page is inert while
// one is open, Tab and Shift+Tab cycle inside it, Escape closes it, and
// focus goes back to the control that opened it. A closed dialog is removed
// from the document, so nothing it showed (a new key) stays in the page.

import { h, uid } from './dom.js';

const FOCUSABLE = 'a[href], button:not([disabled]), input:not([disabled]):not([type="hidden"]), select:not([disabled]), textarea:not([disabled]), [tabindex]:not([tabindex="-1"])';

function focusables(root) {
  return [...root.querySelectorAll(FOCUSABLE)].filter((el) => el.getClientRects().length > 0 && !el.closest('[hidden]'));
}

/**
 * Opens a modal dialog.
 * title: heading text; body: nodes; actions: buttons for the footer;
 * wide: a wider dialog; onClose: called once after it closed and left the page.
 * Returns {dialog, body, close}.
 */
export function openDialog({ title, body = [], actions = [], wide = false, onClose, role }) {
  const opener = document.activeElement;
  const titleId = uid('dialog-title');
  const bodyEl = h('div', { class: 'dialog-body' }, body);
  const dialog = h(
    'dialog',
    { 'aria-labelledby': titleId, class: wide ? 'wide' : null, role: role || null },
    h('div', { class: 'dialog-header' }, h('h2', { id: titleId }, title)),
    bodyEl,
    actions.length ? h('div', { class: 'dialog-footer' }, actions) : null,
  );
  let closed = false;
  const finish = () => {
    if (closed) return;
    closed = true;
    dialog.remove();
    if (opener && opener.isConnected && typeof opener.focus === 'function') opener.focus();
    if (onClose) onClose();
  };
  dialog.addEventListener('close', finish);
  // Escape: close through the same path as the buttons, at once. Left to
  // the browser, the dialog closes now but `close` (and so the removal of a
  // shown key from the DOM) only runs as a later task.
  dialog.addEventListener('cancel', (event) => {
    event.preventDefault();
    dialog.close();
    finish();
  });
  dialog.addEventListener('keydown', (event) => {
    if (event.key !== 'Tab') return;
    const items = focusables(dialog);
    if (items.length === 0) {
      event.preventDefault();
      return;
    }
    const first = items[0];
    const last = items[items.length - 1];
    if (event.shiftKey && (document.activeElement === first || !dialog.contains(document.activeElement))) {
      event.preventDefault();
      last.focus();
    } else if (!event.shiftKey && (document.activeElement === last || !dialog.contains(document.activeElement))) {
      event.preventDefault();
      first.focus();
    }
  });
  document.body.append(dialog);
  dialog.showModal();
  const autofocus = dialog.querySelector('[data-autofocus]') || focusables(bodyEl)[0] || focusables(dialog)[0];
  if (autofocus) autofocus.focus();
  return {
    dialog,
    body: bodyEl,
    close() {
      // Leave the page now, not when the queued `close` event runs: the
      // shown-once key must be gone from the DOM as soon as the dialog is.
      if (dialog.open) dialog.close();
      finish();
    },
  };
}

/** Asks to confirm something destructive; resolves true when confirmed.
 *  `run` performs it while the dialog shows progress; its error is shown
 *  in the dialog and the dialog stays open. */
export function confirmDialog({ title, message, confirmLabel, run }) {
  return new Promise((resolve) => {
    let done = false;
    const error = h('div', { class: 'alert error', role: 'alert', hidden: true });
    const cancel = h('button', { type: 'button' }, 'Cancel');
    const confirm = h('button', { type: 'button', class: 'danger' }, confirmLabel);
    const d = openDialog({
      title,
      role: 'alertdialog',
      body: [error, h('p', {}, message)],
      actions: [cancel, confirm],
      onClose: () => resolve(done),
    });
    cancel.addEventListener('click', () => d.close());
    confirm.addEventListener('click', async () => {
      confirm.disabled = true;
      cancel.disabled = true;
      try {
        if (run) await run();
        done = true;
        d.close();
      } catch (e) {
        error.textContent = e.message;
        error.hidden = false;
        confirm.disabled = false;
        cancel.disabled = false;
        confirm.focus();
      }
    });
    cancel.focus();
  });
}
