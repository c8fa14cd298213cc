// Access control in the web client (docs/access.md): what the server's mode needs at sign-in (GET /auth.json),
// the credential the page was opened with (an invite link, #invite=..., or a token from the operator's app,
// #jwt=... or posted by the page that embeds this one), and the device credential that brings this device back
// without the password. A password is only ever in the form's field and the one login message that carries it:
// it is never stored. The device credential is kept in localStorage until the person signs out or the server
// no longer takes it.

import { t } from './i18n.js';
import { $ } from './ui.js';

const DEVICE_KEY = 'tandem.device';
const MAX_TOKEN = 8192;

/** What the page knows of the server's access mode, and the credentials it was handed. */
export const access = {
  mode: 'open', // open | password | accounts | jwt
  invites: false,
  embedders: [], // origins that may post a token (jwt mode)
  invite: '', // the invite link's secret, until it is used
  jwt: '', // the token from the app
};

/** Reads the server's mode and the credential in the page's address, which it then takes out of the address. */
export async function loadAccess() {
  try {
    const r = await fetch('/auth.json', { cache: 'no-store' });
    const info = r.ok ? await r.json() : null;
    if (info && typeof info.mode === 'string') {
      access.mode = info.mode;
      access.invites = info.invites === true;
      access.embedders = Array.isArray(info.embedders) ? info.embedders.map((o) => String(o).replace(/\/$/, '')) : [];
    }
  } catch {
    // A server without access modes: open.
  }
  const fragment = new URLSearchParams(window.location.hash.slice(1));
  const invite = fragment.get('invite') || '';
  const jwt = fragment.get('jwt') || '';
  if (invite.length <= MAX_TOKEN) access.invite = invite;
  if (jwt.length <= MAX_TOKEN) access.jwt = jwt;
  if (invite || jwt) {
    // Out of the address bar and the history: the secret is not for bookmarks, screenshots or shared links.
    window.history.replaceState(null, '', window.location.pathname + window.location.search);
  }
}

/** The device credential stored on this device: {device, name}, or null. */
export function storedDevice() {
  try {
    const d = JSON.parse(localStorage.getItem(DEVICE_KEY) || 'null');
    return d && typeof d.device === 'string' && typeof d.name === 'string' ? d : null;
  } catch {
    return null;
  }
}

export function forgetDevice() {
  localStorage.removeItem(DEVICE_KEY);
}

/** Whether the person must type a password to sign in: the mode wants one and no other credential is at hand. */
export function needsPassword() {
  return (access.mode === 'password' || access.mode === 'accounts') && !access.invite && !storedDevice();
}

/** Sets the login page up for the mode: its intro, the password field, the note of an invite or a missing token. */
export function renderAccess() {
  const mode = access.mode;
  const intro = { password: 'login.introPassword', accounts: 'login.introAccounts', jwt: 'login.introToken' }[mode];
  $('#login-intro').textContent = t(intro || 'login.intro');
  $('#login-password-row').hidden = !needsPassword();
  $('#login-name-row').hidden = mode === 'jwt';
  // An account's name goes with its password (for password managers); elsewhere the name is a nickname.
  $('#login-name').autocomplete = mode === 'accounts' ? 'username' : 'nickname';
  $('#login-button').hidden = mode === 'jwt' && !access.jwt;
  const note = $('#login-note');
  note.textContent = access.invite ? t('login.invited') : '';
  note.hidden = !access.invite;
}

/** What a sign-in carries besides the name: the invite or token at hand, the password typed, the device credential. */
export function credentials(password = '') {
  const c = {};
  if (access.invite) c.invite = access.invite;
  if (access.jwt) c.jwt = access.jwt;
  if (password) c.password = password;
  const d = storedDevice();
  if (d && access.mode !== 'jwt' && access.mode !== 'open') c.device = d.device;
  return c;
}

/** After a sign-in: keep the device credential for next time, and forget the invite (it is used). */
export function signedIn(reply) {
  if (typeof reply.device === 'string' && reply.device) {
    localStorage.setItem(DEVICE_KEY, JSON.stringify({ device: reply.device, name: reply.name }));
  }
  access.invite = '';
  $('#login-password').value = '';
}

/** After a refused sign-in (or a reconnect refused): drop the credential the server no longer takes. */
export function refused(err) {
  if (err.code !== 'unauthorized' && err.code !== 'expired') return;
  if (err.sent === 'invite') access.invite = '';
  else if (err.sent === 'jwt') access.jwt = '';
  else if (err.sent === 'device' || err.sent === '') forgetDevice();
}

/** The words for a refusal about access, in the page's language; '' when the refusal is about something else. */
export function refusalText(err) {
  switch (err.code) {
    case 'auth_required':
      return t(`login.need.${access.mode === 'accounts' || access.mode === 'jwt' ? access.mode : 'password'}`);
    case 'unauthorized':
      if (err.sent === 'invite') return t('login.inviteInvalid');
      if (err.sent === 'jwt') return t('login.tokenInvalid');
      if (err.sent === 'device') return t('login.deviceEnded');
      return t(access.mode === 'accounts' ? 'login.wrongAccount' : 'login.wrongPassword');
    case 'expired':
      if (err.sent === 'invite') return t('login.inviteExpired');
      if (err.sent === 'jwt') return t('login.tokenExpired');
      return t('login.deviceEnded');
    case 'rate_limited':
    case 'server_busy':
      return t('login.tryLater', { n: Math.max(1, err.retryAfter || 1) });
  }
  return '';
}

/**
 * Takes tokens posted by the app's page that opened or frames this one ({type: 'tandem-jwt', jwt}), in the jwt
 * mode, from this page's own origin or one the server lists in /auth.json's embedders (-embed-origins and
 * -allowed-origins); a token from any other origin is ignored. onToken is called with each.
 */
export function listenForTokens(onToken) {
  window.addEventListener('message', (ev) => {
    const d = ev.data;
    if (access.mode !== 'jwt' || !d || d.type !== 'tandem-jwt' || typeof d.jwt !== 'string' || !d.jwt || d.jwt.length > MAX_TOKEN) return;
    if (ev.origin !== window.location.origin && !access.embedders.includes(ev.origin)) return;
    access.jwt = d.jwt;
    onToken();
  });
  // Tell the app's page that opened this one (window.open) or frames it that it can post its token now (the
  // message says nothing else).
  const app = window.opener || (window.parent !== window ? window.parent : null);
  if (app) app.postMessage({ type: 'tandem-ready' }, '*');
}
