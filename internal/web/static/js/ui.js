// Small DOM helpers shared by the page: element lookup and creation, avatars, notices, names and durations.

import { LIMITS } from './limits.js';

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
  let text = String(message);
  if (text.length > LIMITS.toastChars) text = `${text.slice(0, LIMITS.toastChars)}…`;
  // The container is a polite live region; an error interrupts as an alert.
  const item = el('div', { class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : null },
    el('span', { class: 'toast-text' }, text));
  const close = el('button', { type: 'button', class: 'toast-close', 'aria-label': 'Dismiss' }, '×');
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

/** Checks a name as the server will (docs/protocol.md, Names): returns {name} or {error} in words. */
export function validateName(raw) {
  const name = String(raw || '').trim();
  if (!name) return { error: 'Type a name first.' };
  if ([...name].length > 64) return { error: 'That name is too long: 64 characters at most.' };
  if (/[\p{Cc}\p{Cf}]/u.test(name)) return { error: 'That name has invisible or control characters in it.' };
  return { name };
}

/** Moves the focus, except on touch screens, where focusing a text field would pop the keyboard up unasked. */
export function focusSoftly(node) {
  if (!node || window.matchMedia('(pointer: coarse)').matches) return;
  node.focus();
}

/** Formats a duration in milliseconds as m:ss or h:mm:ss. */
export function formatDuration(ms) {
  const total = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${s}` : `${m}:${s}`;
}

/**
 * Says when something happened, for a list of recent calls: the time today, "yesterday" and the time, the weekday
 * and the time within a week, else the date and the time; in the page's language.
 */
export function formatWhen(at, now = Date.now(), locale = undefined) {
  const then = new Date(at);
  const today = new Date(now);
  today.setHours(0, 0, 0, 0);
  const days = Math.ceil((today.getTime() - then.getTime()) / 86400000);
  const time = new Intl.DateTimeFormat(locale, { hour: 'numeric', minute: '2-digit' }).format(then);
  if (days <= 0) return time;
  if (days === 1) {
    const yesterday = new Intl.RelativeTimeFormat(locale, { numeric: 'auto' }).format(-1, 'day');
    return `${yesterday} ${time}`;
  }
  if (days < 7) return new Intl.DateTimeFormat(locale, { weekday: 'short', hour: 'numeric', minute: '2-digit' }).format(then);
  return new Intl.DateTimeFormat(locale, { dateStyle: 'medium', timeStyle: 'short' }).format(then);
}
