// The page's language: every word the client shows or says (text, errors, states, tooltips, labels for screen
// readers) comes from a language file, js/lang/<tag>.js, one per language, which exports its messages by key.
// Adding a language is adding its file: the server lists the files it serves at /js/lang/index.json, and the
// page offers each one, named in its own language (Intl.DisplayNames).
//
// The language is the person's choice when they made one on this device (localStorage tandem.lang), else the
// first of the browser's languages that a file serves (zh-CN and zh-SG find zh-Hans, en-GB finds en), else
// English. Dates, times, durations and numbers are formatted for it with Intl.

import en from './lang/en.js';

const LANG_KEY = 'tandem.lang';
export const FALLBACK = 'en';

let tag = FALLBACK;
let messages = en;
const loaded = new Map([[FALLBACK, en]]);
let available = [FALLBACK];
const listeners = new Set();

/** The language the page speaks now, as a BCP 47 tag (en, zh-Hans). */
export function language() {
  return tag;
}

/** The languages the server has files for, as tags. */
export function languages() {
  return available.slice();
}

/** The name of a language in that language: English, 简体中文. */
export function languageName(code) {
  try {
    const name = new Intl.DisplayNames([code], { type: 'language' }).of(code);
    return name ? name.charAt(0).toLocaleUpperCase(code) + name.slice(1) : code;
  } catch {
    return code;
  }
}

/** Calls fn whenever the language changes. */
export function onLanguageChange(fn) {
  listeners.add(fn);
}

/**
 * Returns the message `key` in the page's language, with {placeholders} filled from params. A message may depend
 * on a number (params.n): then it is an object of plural forms (zero, one, two, few, many, other) chosen with
 * Intl.PluralRules. A key the language lacks falls back to English (and says so in the console).
 */
export function t(key, params = {}) {
  let m = messages[key];
  if (m === undefined) {
    m = en[key];
    if (m === undefined) {
      console.warn(`tandem: no message ${key}`);
      return key;
    }
    console.debug(`tandem: no ${tag} message for ${key}, English instead`);
  }
  if (typeof m === 'object') {
    const n = Number(params.n) || 0;
    m = m[new Intl.PluralRules(tag).select(n)] ?? m.other;
  }
  return m.replace(/\{(\w+)\}/g, (all, name) => (name in params ? format(params[name]) : all));
}

function format(v) {
  return typeof v === 'number' ? new Intl.NumberFormat(tag).format(v) : String(v);
}

/** Picks the language to start with: the stored choice, else the browser's, else English. */
export function preferred(list = available, stored = readChoice(), browser = navigator.languages || [navigator.language]) {
  if (stored && list.includes(stored)) return stored;
  for (const wanted of browser) {
    const found = match(wanted, list);
    if (found) return found;
  }
  return FALLBACK;
}

/**
 * The tag of `list` that serves a browser language: the same language and script (zh-CN is written in Hans, so it
 * finds zh-Hans; zh-TW is Hant, so it does not), else the same language in any script.
 */
export function match(wanted, list) {
  let want;
  try {
    want = new Intl.Locale(wanted).maximize();
  } catch {
    return '';
  }
  const candidates = list.map((code) => {
    try {
      return [code, new Intl.Locale(code).maximize()];
    } catch {
      return [code, null];
    }
  }).filter(([, l]) => l && l.language === want.language);
  const same = candidates.find(([, l]) => l.script === want.script);
  return (same || candidates[0] || [''])[0];
}

function readChoice() {
  try {
    return localStorage.getItem(LANG_KEY) || '';
  } catch {
    return '';
  }
}

/** Learns which languages the server has, then speaks the preferred one. */
export async function startLanguage() {
  try {
    const res = await fetch('/js/lang/index.json');
    const list = await res.json();
    if (Array.isArray(list) && list.every((c) => typeof c === 'string')) available = list.includes(FALLBACK) ? list : [FALLBACK, ...list];
  } catch { /* English only */ }
  await setLanguage(preferred(), false);
}

/** Speaks `code` from now on; remember makes it the choice of this device. */
export async function setLanguage(code, remember = true) {
  if (!available.includes(code)) code = FALLBACK;
  if (!loaded.has(code)) {
    try {
      loaded.set(code, (await import(`./lang/${code}.js`)).default);
    } catch (err) {
      console.warn(`tandem: the ${code} language file did not load:`, err);
      code = FALLBACK;
    }
  }
  tag = code;
  messages = loaded.get(code);
  if (remember) {
    try {
      localStorage.setItem(LANG_KEY, code);
    } catch { /* the choice lasts as long as the page */ }
  }
  document.documentElement.lang = code;
  translatePage();
  for (const fn of listeners) fn(code);
}

/**
 * Translates the page's fixed words: an element with data-i18n="key" gets the message as its text, and
 * data-i18n-attr="aria-label:key; title:key" sets attributes.
 */
export function translatePage(root = document) {
  for (const node of root.querySelectorAll('[data-i18n]')) node.textContent = t(node.dataset.i18n);
  for (const node of root.querySelectorAll('[data-i18n-attr]')) {
    for (const pair of node.dataset.i18nAttr.split(';')) {
      const [attr, key] = pair.split(':').map((x) => x.trim());
      if (attr && key) node.setAttribute(attr, t(key));
    }
  }
}

// Formats for the page's language.

/** A call's running time: m:ss, or h:mm:ss. Digits read the same in the languages served. */
export function clock(ms) {
  const total = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${s}` : `${m}:${s}`;
}

/** How long something lasted, in words: "1 min, 5 sec", "1分钟5秒". */
export function duration(ms) {
  const total = Math.max(0, Math.round(ms / 1000));
  const parts = { hours: Math.floor(total / 3600), minutes: Math.floor((total % 3600) / 60), seconds: total % 60 };
  if (!parts.hours) delete parts.hours;
  if (!parts.hours && !parts.minutes) delete parts.minutes;
  if (typeof Intl.DurationFormat === 'function') {
    return new Intl.DurationFormat(tag, { style: 'short' }).format(parts);
  }
  const unit = { hours: 'hour', minutes: 'minute', seconds: 'second' };
  return new Intl.ListFormat(tag, { type: 'unit', style: 'short' }).format(Object.entries(parts)
    .map(([k, v]) => new Intl.NumberFormat(tag, { style: 'unit', unit: unit[k], unitDisplay: 'short' }).format(v)));
}

/** A time of day: 6:05 PM, 下午6:05. */
export function timeOfDay(at) {
  return new Intl.DateTimeFormat(tag, { hour: 'numeric', minute: '2-digit' }).format(new Date(at));
}

/**
 * When something happened, for a list of recent calls: the time today, "yesterday" and the time, the weekday and
 * the time within a week, else the date and the time.
 */
export function when(at, now = Date.now()) {
  const then = new Date(at);
  const today = new Date(now);
  today.setHours(0, 0, 0, 0);
  const days = Math.ceil((today.getTime() - then.getTime()) / 86400000);
  if (days <= 0) return timeOfDay(at);
  if (days === 1) {
    const yesterday = new Intl.RelativeTimeFormat(tag, { numeric: 'auto' }).format(-1, 'day');
    return t('when.yesterday', { day: yesterday, time: timeOfDay(at) });
  }
  if (days < 7) return new Intl.DateTimeFormat(tag, { weekday: 'short', hour: 'numeric', minute: '2-digit' }).format(then);
  return new Intl.DateTimeFormat(tag, { dateStyle: 'medium', timeStyle: 'short' }).format(then);
}

/** A number with a unit of Intl's (millisecond, kilobit-per-second, …). */
export function unit(value, name, digits = 0) {
  return new Intl.NumberFormat(tag, { style: 'unit', unit: name, unitDisplay: 'short', maximumFractionDigits: digits })
    .format(value);
}

/** A share as a percentage: 0.5 → 0.5%. */
export function percent(value, digits = 1) {
  return new Intl.NumberFormat(tag, { style: 'percent', maximumFractionDigits: digits, minimumFractionDigits: digits })
    .format(value / 100);
}

/** A list of words: "a, b and c", "a、b和c". */
export function list(items, type = 'conjunction') {
  return new Intl.ListFormat(tag, { type }).format(items);
}
