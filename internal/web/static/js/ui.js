// Small DOM helpers shared by the page: element lookup and creation, avatars, notices, names.

import { LIMITS } from './limits.js';
import { onLanguageChange, t } from './i18n.js';

/** Returns the first element matching a CSS selector. */
export const $ = (sel) => document.querySelector(sel);

/** Creates an element with attributes (false and null are left out) and children (strings become text). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v == null) continue;
    node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) {
    if (c == null) continue;
    node.append(typeof c === 'string' ? document.createTextNode(c) : c);
  }
  return node;
}

/**
 * Fills an avatar element with a name's initials on a colour derived from the name. The initials are drawn by the
 * stylesheet (from data-initials), not written into the page: they are a picture of the name next to them, and as
 * text they would be read, and counted as words of the button they sit in.
 */
export function avatar(node, name) {
  const words = String(name || '?').trim().split(/\s+/u);
  const letters = words.length > 1 ? [...words[0]][0] + [...words[words.length - 1]][0] : [...words[0]][0];
  node.dataset.initials = (letters || '?').toUpperCase();
  let h = 0;
  for (const ch of String(name)) h = (h * 31 + ch.codePointAt(0)) % 360;
  node.style.setProperty('--hue', String(h));
  return node;
}

/**
 * Shows a notice at the bottom of the page for a few seconds. Errors are announced assertively to screen readers;
 * nothing ever uses alert().
 */
export function toast(message, { kind = 'info', timeout = 6000 } = {}) {
  const box = document.getElementById('toasts');
  // The container is a polite live region; an error interrupts as an alert.
  const item = el('div', { class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : null },
    el('span', { class: 'toast-text' }, toastText(message)));
  // Words given as a function are said again in the new language when the language changes.
  if (typeof message === 'function') item.words = message;
  const close = el('button', { type: 'button', class: 'toast-close', 'aria-label': t('notices.dismiss') }, '×');
  const timer = setTimeout(() => item.remove(), timeout);
  item.dismiss = () => {
    clearTimeout(timer);
    item.remove();
  };
  close.addEventListener('click', item.dismiss);
  item.append(close);
  box.append(item);
  // At most a few at once: the oldest go, and take their timers with them (a flood of notices holds nothing).
  while (box.children.length > LIMITS.toasts) box.firstElementChild.dismiss();
  return item;
}

function toastText(message) {
  const text = String(typeof message === 'function' ? message() : message);
  return text.length > LIMITS.toastChars ? `${text.slice(0, LIMITS.toastChars)}…` : text;
}

// Notices on screen follow a change of language: their words (when given as a function) and their close button.
onLanguageChange(() => {
  for (const item of document.querySelectorAll('#toasts .toast')) {
    if (item.words) item.querySelector('.toast-text').textContent = toastText(item.words);
    item.querySelector('.toast-close').setAttribute('aria-label', t('notices.dismiss'));
  }
});

/** Checks a name as the server will (docs/protocol.md, Names): returns {name} or {error}, the key of its words. */
export function validateName(raw) {
  const name = String(raw || '').trim();
  if (!name) return { error: 'name.empty' };
  if ([...name].length > 64) return { error: 'name.long' };
  if (/[\p{Cc}\p{Cf}]/u.test(name)) return { error: 'name.invisible' };
  return { name };
}

/** Moves the focus, except on touch screens, where focusing a text field would pop the keyboard up unasked. */
export function focusSoftly(node) {
  if (!node || window.matchMedia('(pointer: coarse)').matches) return;
  node.focus();
}
