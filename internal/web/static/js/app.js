// tandem's web client: the login page, the call page, and the state of the one call a page can be in.
//
// Phases of a page once signed in:
//   idle      nobody to talk to; the online list refreshes itself
//   outgoing  we sent an offer and wait for ringing / an answer (or busy, not online, declined, no answer)
//   incoming  an offer came in; the page rings with Accept / Decline
//   active    the call is connecting or connected
//
// Compatibility with the tutorial's clients: they only speak login/offer/answer/candidate/leave, never send a
// reason, never send `ringing`, and answer every offer at once. Everything below copes with that.

import { Signaling, LoginError, serverURL } from './signaling.js';
import {
  access, credentials, forgetDevice, listenForTokens, loadAccess, needsPassword, refusalText, refused, renderAccess,
  signedIn, storedDevice,
} from './access.js';
import { LocalMedia } from './media.js';
import { Call, sdpHasVideo } from './call.js';
import { CandidateQueue, LIMITS, drop, dropped } from './limits.js';
import { RecentCalls, isMissed } from './recent.js';
import { StatsMeter, watchQuality } from './stats.js';
import { Tone } from './tone.js';
import { $, avatar, el, focusSoftly, toast, validateName } from './ui.js';
import {
  clock, duration, language, languageName, languages, list, onLanguageChange, percent, setLanguage, startLanguage, t,
  timeOfDay, unit, when,
} from './i18n.js';

const params = new URLSearchParams(window.location.search);

/** Settings a deployment or a test may change through the page's query string. */
const config = {
  // How long an outgoing call rings before the caller gives up (leave with reason no_answer).
  ringTimeoutMs: secondsParam('ringTimeout', 30) * 1000,
  // How long an incoming call rings when the caller never gives up (a tutorial client has no ring timeout).
  incomingTimeoutMs: secondsParam('incomingTimeout', 60) * 1000,
  // How many people the online list shows at once; the rest are found by searching.
  listLimit: 20,
  // How often the online list is asked for again while the page is idle, when the server does not keep it up to
  // date itself (a server older than live presence, or one watching too many lists: docs/protocol.md, users).
  listRefreshMs: secondsParam('listRefresh', 30) * 1000,
};

function secondsParam(key, fallback) {
  const v = Number.parseFloat(params.get(key));
  return Number.isFinite(v) && v > 0 ? v : fallback;
}

const SESSION_KEY = 'tandem.session';

const state = {
  name: '',
  iceServers: [],
  phase: 'idle',
  call: null, // Call while outgoing or active
  incoming: null, // {from, offer, candidates (a CandidateQueue)} while incoming
  ringTimer: 0,
  ringing: false, // the callee's device is ringing (we got `ringing`)
  connectedAt: 0,
  clock: 0,
  meter: null,
  lastStats: null,
  peerMedia: { audio: true, video: true, screen: false },
  query: '',
  users: null,
  echoName: '',
  listTimer: 0,
  watching: false, // the server pushes the online list when it changes (the reply to our watch said so)
  searchTimer: 0,
  unread: 0,
  chatNotices: [], // the notices of chat messages that came while the chat was closed
  missedWhileBusy: [], // names of people whose calls came while this page was in another call (bounded)
  titleTimer: 0,
  callNotice: null, // the notification of the call that rings, while the page is in the background
  ringStartedAt: 0,
};

const recent = new RecentCalls();

/** A short history of what the page did, for whoever debugs it (window.tandem.history, and the console). */
const history = [];
function log(line) {
  if (line.length > LIMITS.historyLineChars) line = `${line.slice(0, LIMITS.historyLineChars)}…`;
  history.push(`${new Date().toISOString().slice(11, 23)} ${line}`);
  if (history.length > LIMITS.historyLines) history.shift();
  console.debug(`tandem: ${line}`);
}

const signaling = new Signaling(serverURL());
const media = new LocalMedia();
let mediaReady = Promise.resolve();
const tone = new Tone();

// The hook the browser tests (and a curious developer) use. Not part of any protocol.
window.tandem = {
  config,
  get phase() { return state.phase; },
  get name() { return state.name; },
  get peer() { return state.call ? state.call.peer : state.incoming ? state.incoming.from : ''; },
  get pc() { return state.call ? state.call.pc : null; },
  get call() { return state.call; },
  get stats() { return state.lastStats; },
  get users() { return state.users; },
  get signaling() { return signaling.state; },
  get chatReady() { return !!(state.call && state.call.chatReady); },
  // The other side's candidates held until they can be used (while ringing, or until the answer).
  get heldCandidates() {
    return state.incoming ? state.incoming.candidates.length : state.call ? state.call.pendingCandidates.length : 0;
  },
  dropped,
  history,
  // The ring tone now playing ('' when none), and how loud what the page plays is.
  get tone() { return tone.playing; },
  toneLevel: () => tone.level(),
};

// ---------------------------------------------------------------------------------------------------------------
// Login

/** Shows the login page; error, when given, is a function that says what went wrong (in the page's language). */
function showLogin({ name = '', error = null } = {}) {
  document.body.dataset.view = 'login';
  $('#login-view').hidden = false;
  $('#call-view').hidden = true;
  $('#incoming').hidden = true;
  setBusy(false);
  if (name) $('#login-name').value = name;
  state.loginError = error;
  $('#login-error').textContent = error ? error() : '';
  $('#login-name').setAttribute('aria-invalid', error ? 'true' : 'false');
  document.title = 'tandem';
  $('#login-name').focus();
}

function setBusy(busy, label = 'login.signingIn') {
  const button = $('#login-button');
  button.disabled = busy;
  button.classList.toggle('loading', busy);
  state.busyLabel = busy ? label : 'login.submit';
  button.querySelector('.btn-label').textContent = t(state.busyLabel);
}

async function submitLogin(ev) {
  ev.preventDefault();
  tone.unlock(); // a user gesture: from now on the page may ring
  if (access.mode === 'jwt') { // the token names the user
    if (access.jwt) await signIn('', '');
    return;
  }
  const input = $('#login-name');
  const { name, error } = validateName(input.value);
  if (error) {
    showLogin({ error: () => t(error) });
    return;
  }
  const password = needsPassword() ? $('#login-password').value : '';
  if (needsPassword() && !password) {
    showLogin({ name, error: () => refusalText({ code: 'auth_required' }) });
    $('#login-password').focus();
    return;
  }
  await signIn(name, '', password);
}

async function signIn(name, token, password = '') {
  state.signInStarted = true;
  setBusy(true, token ? 'login.resuming' : 'login.signingIn');
  $('#login-error').textContent = '';
  let reply;
  try {
    reply = await signaling.login(name, token, credentials(password));
  } catch (err) {
    if (err instanceof LoginError && err.code === 'superseded') return;
    sessionStorage.removeItem(SESSION_KEY);
    refused(err);
    renderAccess();
    showLogin({ name, error: () => loginErrorText(err, name) });
    if (needsPassword() && (err.code === 'unauthorized' || err.code === 'expired')) $('#login-password').focus();
    return;
  }
  signedIn(reply);
  renderAccess();
  enterCallView(reply);
}

function loginErrorText(err, name) {
  const about = refusalText(err);
  if (about) return about;
  if (err.code === 'invalid_name' && !name) return t('login.chooseName');
  switch (err.code) {
    case 'name_taken': return t('login.nameTaken', { name });
    case 'invalid_name': return t('login.invalidName');
    case 'unreachable': return t('login.unreachable', { host: window.location.host });
    case 'bad_address': return t('login.badAddress', { message: err.message });
    default: return err.message ? t('login.refusedBecause', { message: err.message }) : t('login.refused');
  }
}

function enterCallView(reply) {
  state.name = reply.name;
  state.iceServers = Array.isArray(reply.iceServers) ? reply.iceServers : [];
  saveSession(reply);
  document.body.dataset.view = 'call';
  $('#login-view').hidden = true;
  $('#call-view').hidden = false;
  $('#me-name').textContent = state.name;
  avatar($('#me-avatar'), state.name);
  setConnection('online');
  setPhase('idle');
  recent.load(state.name);
  renderRecent();
  renderNotifyCard();
  mediaReady = startMedia();
  if (reply.peer) {
    // A reloaded page whose old connection still held a call: that call cannot carry on from here.
    signaling.send({ type: 'leave', name: reply.peer });
    toast(() => t('call.endedOnReload', { name: reply.peer }));
  }
  useEchoName(reply);
  requestUsers();
  // The stage, not the search box: a person who presses M or V (the shortcuts the buttons show) mutes or stops
  // video instead of typing into a field they never chose.
  focusSoftly($('#main'));
}

/** The login reply names the echo test user when it is online, however long the list of people is (issue 5). */
function useEchoName(reply) {
  if (!reply.echo) return;
  state.echoName = reply.echo;
  $('#test-call').hidden = false;
}

function saveSession(reply) {
  if (reply.token) sessionStorage.setItem(SESSION_KEY, JSON.stringify({ name: reply.name, token: reply.token }));
}

function loadSession() {
  try {
    const s = JSON.parse(sessionStorage.getItem(SESSION_KEY) || 'null');
    return s && typeof s.name === 'string' && typeof s.token === 'string' ? s : null;
  } catch {
    return null;
  }
}

function signOut() {
  if (state.phase !== 'idle') hangUp();
  sessionStorage.removeItem(SESSION_KEY);
  forgetDevice(); // signing out of this device: the next visit asks for the password again
  renderAccess();
  signaling.close();
  media.stop();
  stopListTimer();
  state.users = null;
  state.echoName = '';
  showLogin({ name: state.name });
}

// ---------------------------------------------------------------------------------------------------------------
// Local media

async function startMedia() {
  const problem = await media.start();
  if (problem) toast(problem, { kind: 'error', timeout: 12000 });
  await fillDevicePickers();
  renderControls();
}

media.addEventListener('change', () => {
  const v = media.video;
  const local = $('#local-video');
  local.srcObject = v ? new MediaStream([v]) : null;
  local.classList.toggle('mirrored', !!v && v === media.camera);
  renderControls();
});

media.addEventListener('devices', () => { fillDevicePickers(); });

media.addEventListener('screenended', async () => {
  if (state.call) await state.call.replaceTrack('video', media.video);
  renderControls();
  toast(() => t('screen.stopped'));
});

function toggleMic() {
  if (!media.mic) {
    toast(() => t('mic.none'), { kind: 'error' });
    return;
  }
  media.setMic(!media.micOn);
  if (state.call) state.call.sendMediaState();
  renderStage();
  toast(() => t(media.micOn ? 'mic.on' : 'mic.muted'), { timeout: 1500 });
}

function toggleCamera() {
  if (state.call && state.call.audioOnly) {
    toast(() => t('cam.audioCallNotice'), { timeout: 2500 });
    return;
  }
  if (!media.camera) {
    toast(() => t('cam.none'), { kind: 'error' });
    return;
  }
  media.setCamera(!media.cameraOn);
  if (state.call) state.call.sendMediaState();
  renderStage();
}

async function toggleScreen() {
  try {
    if (media.screen) {
      media.stopScreen();
    } else {
      await media.startScreen();
      toast(() => t('screen.sharing'), { timeout: 2500 });
    }
  } catch (err) {
    if (err && err.name === 'NotAllowedError') return; // the person cancelled the picker
    toast(() => t('screen.failed', { message: err.message || err }), { kind: 'error' });
    return;
  }
  if (state.call) await state.call.replaceTrack('video', media.video);
  renderControls();
}

async function fillDevicePickers() {
  const { cameras, mics } = await media.devices();
  fillSelect($('#camera-select'), cameras, media.cameraId, t('devices.noCamera'), 'devices.cameraN');
  fillSelect($('#mic-select'), mics, media.micId, t('devices.noMic'), 'devices.micN');
}

function fillSelect(select, devices, current, emptyLabel, unnamed) {
  select.replaceChildren();
  if (!devices.length) {
    select.append(el('option', { value: '' }, emptyLabel));
    select.disabled = true;
    return;
  }
  select.disabled = false;
  // A device the browser gives no name (before the person allowed the camera) is numbered.
  devices.forEach((d, i) => select.append(el('option', { value: d.id, selected: d.id === current }, d.label || t(unnamed, { n: i + 1 }))));
}

async function pickDevice(kind, select) {
  if (!select.value) return;
  try {
    await media.useDevice(kind, select.value);
  } catch (err) {
    toast(() => t(kind === 'audio' ? 'devices.micFailed' : 'devices.cameraFailed'), { kind: 'error' });
    return;
  }
  if (state.call) await state.call.replaceTrack(kind, kind === 'audio' ? media.audio : media.video);
  meter.restart();
}

/** The microphone level in the device panel, so a person can see their mic works before calling. */
const meter = {
  ctx: null, analyser: null, source: null, raf: 0,
  start() {
    if (!media.mic || this.raf) return;
    try {
      this.ctx = this.ctx || new AudioContext();
      this.analyser = this.ctx.createAnalyser();
      this.analyser.fftSize = 512;
      this.source = this.ctx.createMediaStreamSource(new MediaStream([media.mic]));
      this.source.connect(this.analyser);
    } catch {
      return;
    }
    const buf = new Uint8Array(this.analyser.fftSize);
    const bar = $('#mic-meter');
    const tick = () => {
      this.analyser.getByteTimeDomainData(buf);
      let peak = 0;
      for (const v of buf) peak = Math.max(peak, Math.abs(v - 128));
      bar.style.transform = `scaleX(${Math.min(1, peak / 64).toFixed(3)})`;
      this.raf = requestAnimationFrame(tick);
    };
    this.raf = requestAnimationFrame(tick);
  },
  stop() {
    cancelAnimationFrame(this.raf);
    this.raf = 0;
    if (this.source) this.source.disconnect();
    this.source = null;
  },
  restart() { if (this.raf) { this.stop(); this.start(); } },
};

function toggleDevices(open = $('#devices').hidden) {
  $('#devices').hidden = !open;
  $('#devices-button').setAttribute('aria-expanded', String(open));
  if (open) {
    fillDevicePickers();
    meter.start();
    $('#camera-select').focus();
  } else {
    meter.stop();
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Calls

/**
 * Calls a name typed under "Call someone by name". Names are case-sensitive on the server, but people type them in
 * any case: when nobody online has the name as typed, and exactly one person has it in another case (the server's
 * case-insensitive match, as in search), that person is called. With several, the page asks which one.
 */
async function dial(rawName, options = {}) {
  const { name, error } = validateName(rawName);
  if (error || state.phase !== 'idle' || signaling.state !== 'online') {
    await startCall(rawName, options); // says what is wrong
    return;
  }
  const users = await lookUp(name);
  if (users && !users.some((u) => u.name === name)) {
    const same = users.filter((u) => sameLetters(u.name, name) && u.name !== state.name);
    if (same.length > 1) {
      const names = list(same.map((u) => t('call.quoted', { name: u.name })), 'disjunction');
      toast(() => t('call.whichOne', { name, names }), { kind: 'error' });
      return;
    }
    if (same.length === 1) {
      await startCall(same[0].name, options);
      return;
    }
  }
  await startCall(name, options);
}

/** Whether two names are the same but for case, as the server compares them in search (docs/protocol.md). */
function sameLetters(a, b) {
  return a.toLowerCase() === b.toLowerCase();
}

/** Asks the server who is online with names starting with name (any case); null when no answer comes in time. */
const lookups = new Map(); // query → resolve functions waiting for its answer
function lookUp(name) {
  return new Promise((resolve) => {
    const waiting = lookups.get(name) || [];
    lookups.set(name, [...waiting, resolve]);
    if (!waiting.length && !signaling.send({ type: 'users', query: name, limit: 100 })) finishLookUp(name, null);
    setTimeout(() => finishLookUp(name, null), 3000);
  });
}

function finishLookUp(query, users) {
  const waiting = lookups.get(query);
  if (!waiting) return;
  lookups.delete(query);
  for (const resolve of waiting) resolve(users);
}

/** Calls a name; with audioOnly the call has no video, either way. */
async function startCall(rawName, { audioOnly = false } = {}) {
  const { name, error } = validateName(rawName);
  if (error) {
    toast(() => t(error), { kind: 'error' });
    return;
  }
  if (name === state.name) {
    toast(() => t('call.self'), { kind: 'error' });
    return;
  }
  if (state.phase === 'incoming' && state.incoming.from === name) {
    await accept({ audioOnly }); // they called us first: pick up rather than call back
    return;
  }
  if (state.phase !== 'idle') {
    toast(() => t('call.alreadyInCall'), { kind: 'error' });
    return;
  }
  if (signaling.state !== 'online') {
    toast(() => t('call.offline'), { kind: 'error' });
    return;
  }
  tone.unlock();
  const call = newCall(name, 'caller', { audioOnly });
  state.ringing = false;
  setPhase('outgoing');
  await mediaReady;
  if (state.call !== call) return; // cancelled while the camera started
  try {
    await call.start();
  } catch (err) {
    // A glare settled while the offer was being made replaces this call: then there is nothing to end.
    if (state.call === call) endCall(() => t('call.notStarted', { message: err.message || err }), 'error');
    return;
  }
  if (state.call !== call || state.phase !== 'outgoing') return;
  clearTimeout(state.ringTimer);
  state.ringTimer = setTimeout(() => {
    if (state.call !== call || state.phase !== 'outgoing') return;
    signaling.send({ type: 'leave', name, reason: 'no_answer' });
    endCall(() => t('call.noAnswer', { name }), 'info', 'no_answer');
  }, config.ringTimeoutMs);
}

function newCall(peer, role, { audioOnly = false, startedAt = Date.now() } = {}) {
  const call = new Call({
    self: state.name,
    peer,
    role,
    iceServers: state.iceServers,
    media,
    send: (msg) => signaling.send(msg),
    audioOnly,
  });
  call.startedAt = startedAt;
  call.quality = watchQuality(call, (msg) => signaling.send(msg)); // reports for the operator's metrics
  call.addEventListener('described', () => {
    if (state.call !== call) return;
    if (call.audioOnly && !call.wantsAudioOnly && !call.toldAudioOnly) {
      // The other side answered, or called, without video.
      call.toldAudioOnly = true;
      if (call.role === 'caller') toast(() => t('call.answeredAudio', { name: peer }), { timeout: 4000 });
    }
    renderStage();
    renderControls();
    renderView();
  });
  state.call = call;
  state.peerMedia = { audio: true, video: true, screen: false };
  call.addEventListener('remotestream', (ev) => {
    if (state.call !== call) return;
    const video = $('#remote-video');
    if (video.srcObject !== ev.detail.stream) video.srcObject = ev.detail.stream;
  });
  call.addEventListener('state', (ev) => { if (state.call === call) connectionState(ev.detail.state); });
  call.addEventListener('restart', () => { if (state.call === call) showCallState('restarting', 'state.reconnecting'); });
  call.addEventListener('chatready', (ev) => { if (state.call === call) chatReady(ev.detail.ready); });
  call.addEventListener('chat', (ev) => { if (state.call === call) addChat('them', ev.detail.text); });
  call.addEventListener('peermedia', (ev) => {
    if (state.call !== call) return;
    state.peerMedia = ev.detail;
    renderStage();
  });
  return call;
}

function onOffer(msg) {
  const from = msg.name;
  if (!from || !msg.offer) return;
  const call = state.call;
  if (call && call.peer === from) {
    if (state.phase === 'outgoing') {
      // Glare: we called each other at the same moment. The name that sorts first keeps its offer.
      if (state.name < from) return; // ours wins; they will answer it
      const early = call.pendingCandidates.take(); // their candidates, for the offer we answer now
      call.close();
      answerCall(from, msg.offer, early, { audioOnly: call.wantsAudioOnly });
      return;
    }
    call.handleOffer(msg.offer).catch((err) => console.warn('tandem: renegotiation failed:', err));
    return;
  }
  if (state.phase === 'incoming' && state.incoming.from === from) {
    state.incoming.offer = msg.offer; // the caller sent a fresh offer: answer that one
    return;
  }
  if (state.phase !== 'idle') {
    // The server answers `busy` for us while we are in a call (and tells us with `missed`); but an offer can cross
    // our own (we started calling someone else as it came). It never rang here: say so once this call is over.
    rememberCall({ peer: from, dir: 'in', outcome: 'missed_busy', audio: !offerHasVideo(msg.offer) });
    noteMissedWhileBusy(from);
    return;
  }
  state.incoming = { from, offer: msg.offer, candidates: new CandidateQueue(from) };
  setPhase('incoming');
  ring(from);
}

/** Whether an offer, as a signaling message carries it (or fails to), has video. */
function offerHasVideo(offer) {
  return sdpHasVideo(offer && offer.sdp);
}

function ring(from) {
  state.ringStartedAt = Date.now();
  $('#incoming-title').textContent = from;
  // A call without video is answered without video: the choice is the caller's.
  const video = offerHasVideo(state.incoming.offer);
  $('#incoming-detail').dataset.i18n = video ? 'incoming.calling' : 'incoming.callingAudio';
  $('#incoming-detail').textContent = t($('#incoming-detail').dataset.i18n);
  $('#accept-audio-button').hidden = !video;
  avatar($('#incoming-avatar'), from);
  $('#incoming').hidden = false;
  placeNotices();
  $('#accept-button').focus();
  tone.play('ring', config.incomingTimeoutMs / 1000);
  attract();
  clearTimeout(state.ringTimer);
  state.ringTimer = setTimeout(() => {
    if (state.phase !== 'incoming' || state.incoming.from !== from) return;
    signaling.send({ type: 'leave', name: from, reason: 'no_answer' });
    missedCall('missed');
    toast(() => t('call.missed', { name: from }));
  }, config.incomingTimeoutMs);
}

/** Keeps the notices clear of the incoming-call panel, which lies over the top of the page while it rings. */
function placeNotices() {
  const box = $('#toasts');
  box.style.marginTop = '';
  const panel = $('#incoming');
  if (panel.hidden) return;
  // The panel's place without its entrance animation (offsetTop, not the bounding box), and a little room.
  const below = panel.offsetTop + panel.offsetHeight + 8 - box.getBoundingClientRect().top;
  if (below > 0) box.style.marginTop = `${Math.ceil(below)}px`;
}

function stopRinging() {
  clearTimeout(state.ringTimer);
  $('#incoming').hidden = true;
  placeNotices();
  tone.stop();
  state.incoming = null;
  stopAttracting();
}

/** Answers the ringing call; with audioOnly, without video either way. */
async function accept({ audioOnly = false } = {}) {
  if (state.phase !== 'incoming') return;
  const { from, offer, candidates } = state.incoming;
  stopRinging();
  await answerCall(from, offer, candidates.take(), { audioOnly });
}

async function answerCall(from, offer, candidates, { audioOnly = false } = {}) {
  // An offer without video makes an audio call on this side too.
  const call = newCall(from, 'callee', {
    audioOnly: audioOnly || !offerHasVideo(offer), startedAt: state.ringStartedAt || Date.now(),
  });
  setPhase('active');
  await mediaReady;
  if (state.call !== call) return;
  try {
    await call.answer(offer, candidates);
  } catch (err) {
    if (state.call !== call) return; // ended meanwhile
    signaling.send({ type: 'leave', name: from });
    endCall(() => t('call.notSetUp', { name: from, message: err.message || err }), 'error');
  }
}

/** Ends the ringing call, which was not answered here (missed, or declined), and puts it in the recent calls. */
function missedCall(outcome) {
  const { from, offer } = state.incoming;
  if (outcome === 'missed') notifyMissed(from);
  rememberCall({ peer: from, dir: 'in', outcome, audio: !offerHasVideo(offer), at: state.ringStartedAt });
  stopRinging();
  setPhase('idle');
}

function decline() {
  if (state.phase !== 'incoming') return;
  const from = state.incoming.from;
  signaling.send({ type: 'leave', name: from, reason: 'declined' });
  missedCall('declined');
  toast(() => t('call.youDeclined', { name: from }), { timeout: 2500 });
}

function hangUp() {
  if (state.phase === 'incoming') {
    decline();
    return;
  }
  const call = state.call;
  if (!call) return;
  const cancelled = state.phase === 'outgoing';
  signaling.send({ type: 'leave', name: call.peer, reason: cancelled ? 'cancelled' : 'hangup' });
  endCall(cancelled ? () => t('call.cancelled') : callSummary(call.peer), 'info', 'cancelled');
}

// callSummary says how the call with peer went; as a function, to be said again in another language.
function callSummary(peer) {
  if (!state.connectedAt) return () => t('call.ended', { name: peer });
  const ms = Date.now() - state.connectedAt;
  return () => t('call.endedAfter', { name: peer, duration: duration(ms) });
}

/**
 * Ends the call on this side (whoever ended it has already told the other side) and says why. The call goes into
 * the recent calls: answered if it was ever connected, else with the given outcome (see recent.js).
 */
function endCall(message, kind = 'info', outcome = 'failed') {
  const call = state.call;
  state.call = null;
  if (call) {
    rememberCall({
      peer: call.peer, dir: call.role === 'caller' ? 'out' : 'in', audio: call.audioOnly,
      outcome: state.connectedAt ? 'answered' : outcome,
      at: call.startedAt, dur: state.connectedAt ? Date.now() - state.connectedAt : undefined,
    });
  }
  if (call) call.quality.ended();
  if (call) call.close();
  clearTimeout(state.ringTimer);
  tone.stop();
  if (media.screen) {
    media.stopScreen();
  }
  leaveCallView();
  const video = $('#remote-video');
  video.srcObject = null;
  const focusWasInCall = !document.activeElement || document.activeElement === document.body ||
    $('#main').contains(document.activeElement) || $('#chat').contains(document.activeElement);
  setPhase('idle');
  if (focusWasInCall) focusSoftly($('#main')); // the hang-up button it was on is disabled now
  if (message) toast(message, { kind });
  tellMissedWhileBusy();
  requestUsers();
}

function onAnswer(msg) {
  const call = state.call;
  if (!call || !msg.answer) return;
  if (msg.name && msg.name !== call.peer) return;
  if (state.phase === 'outgoing') {
    clearTimeout(state.ringTimer);
    tone.stop();
    setPhase('active');
  }
  call.handleAnswer(msg.answer).catch((err) => {
    if (state.call !== call) return;
    signaling.send({ type: 'leave', name: call.peer });
    endCall(() => t('call.notSetUp', { name: call.peer, message: err.message || err }), 'error');
  });
}

/** A candidate is for the call that rings or is in progress, from the other person in it; any other is dropped. */
function onCandidate(msg) {
  const from = msg.name;
  if (state.call && from === state.call.peer) {
    state.call.handleCandidate(msg.candidate).catch((err) => console.debug('tandem: candidate not added:', err));
  } else if (state.incoming && from === state.incoming.from) {
    state.incoming.candidates.push(msg.candidate);
  } else if (msg.candidate) {
    drop('candidates', `a candidate from ${typeof from === 'string' ? from.slice(0, 64) : 'nobody'}, who is not in a call with us`);
  }
}

function onRinging(msg) {
  if (state.phase !== 'outgoing' || !state.call || msg.name !== state.call.peer) return;
  state.ringing = true;
  tone.play('ringback', config.ringTimeoutMs / 1000);
  renderStage();
}

const leaveWords = {
  declined: (name) => t('call.declined', { name }),
  no_answer: (name) => t('call.noAnswer', { name }),
  cancelled: (name) => t('call.hungUp', { name }),
  disconnected: (name) => t('call.disconnected', { name }),
  renamed: (name) => t('call.left', { name }),
  shutdown: () => t('call.shutdown'),
};

function onLeave(msg) {
  const reason = msg.reason || 'hangup';
  if (state.phase === 'incoming' && (!msg.name || msg.name === state.incoming.from)) {
    const from = state.incoming.from;
    missedCall('missed');
    toast(() => (reason === 'shutdown' ? leaveWords.shutdown() : t('call.missed', { name: from })));
    return;
  }
  const call = state.call;
  if (!call || (msg.name && msg.name !== call.peer)) return;
  const peer = call.peer;
  let words;
  let outcome = 'failed';
  if (state.phase === 'outgoing') {
    // A tutorial client that refuses a call just sends a bare leave.
    const said = reason === 'hangup' ? leaveWords.declined : (leaveWords[reason] || leaveWords.declined);
    words = () => said(peer);
    outcome = reason === 'no_answer' ? 'no_answer' : reason === 'hangup' || reason === 'declined' ? 'declined' : 'failed';
  } else if (reason === 'hangup') {
    const summary = callSummary(peer);
    words = () => t('call.twoSentences', { first: t('call.hungUp', { name: peer }), second: summary() });
  } else {
    const summary = callSummary(peer);
    const first = leaveWords[reason] || leaveWords.renamed;
    words = () => t('call.twoSentences', { first: first(peer), second: summary() });
  }
  endCall(words, 'info', outcome);
}

const errorWords = {
  busy: (name) => t('call.busy', { name }),
  not_online: (name) => t('call.notOnline', { name }),
  self_call: () => t('call.self'),
};

function onError(msg) {
  if (msg.request === 'quality') return; // a quality report refused: it was for the operator's metrics only
  const call = state.call;
  const aboutCall = call && (!msg.name || msg.name === call.peer);
  if (msg.request === 'offer' && aboutCall && state.phase === 'outgoing') {
    const words = errorWords[msg.code];
    const outcome = msg.code === 'busy' || msg.code === 'not_online' ? msg.code : 'failed';
    const peer = call.peer;
    endCall(words ? () => words(peer) : () => t('call.notPlaced', { message: msg.message || msg.code }), 'error', outcome);
    return;
  }
  if (msg.request === 'offer' && aboutCall && state.phase === 'active') {
    // A renegotiation (ICE restart, rejoin) the server could not deliver.
    const s = call.pc ? call.pc.connectionState : 'closed';
    if (msg.code === 'not_online' && (s === 'failed' || s === 'disconnected')) {
      const peer = call.peer;
      const summary = callSummary(peer);
      endCall(() => t('call.twoSentences', { first: t('call.noLongerOnline', { name: peer }), second: summary() }));
      return;
    }
    call.rollback().catch(() => {});
    return;
  }
  switch (msg.code) {
    case 'not_in_call':
    case 'not_online':
      return; // a message about a call that has just ended on the other side: the `leave` says it all
    case 'rate_limited':
      toast(() => t('server.slowDown'), { kind: 'error' });
      return;
    case 'internal':
      toast(() => t('server.internal'), { kind: 'error' });
      return;
    case 'too_large':
      toast(() => t('server.tooLarge'), { kind: 'error' });
      return;
    default:
      // A problem the page has no words of its own for: the server's (in English), or at least its code.
      toast(() => (msg.message ? t('server.problem', { message: msg.message }) : t('server.unknownProblem', { code: msg.code || '?' })),
        { kind: 'error' });
  }
}

function connectionState(s) {
  if (s === 'connected') {
    if (!state.connectedAt) startClock();
    showCallState('connected', 'state.connected');
  } else if (s === 'connecting' || s === 'new') {
    showCallState('connecting', state.connectedAt ? 'state.reconnecting' : 'state.connecting');
  } else if (s === 'disconnected') {
    showCallState('restarting', 'state.unstable');
  } else if (s === 'failed') {
    showCallState('failed', 'state.failed');
  }
  renderStage();
}

/** Shows the connection's state in the stage's top bar; key is its words' (the pill keeps it, to translate). */
function showCallState(kind, key) {
  const pill = $('#call-state');
  pill.dataset.state = kind;
  pill.dataset.i18n = key;
  pill.textContent = t(key);
  pill.hidden = false;
}

function startClock() {
  state.connectedAt = Date.now();
  const call = state.call;
  state.meter = call ? new StatsMeter(call.pc) : null;
  const tick = async () => {
    $('#call-duration').textContent = clock(Date.now() - state.connectedAt);
    if (state.meter && state.call === call) {
      try {
        const s = await state.meter.sample();
        state.lastStats = s;
        renderStats();
      } catch { /* the call ended between two samples */ }
    }
  };
  $('#call-duration').hidden = false;
  renderView();
  tick();
  clearInterval(state.clock);
  state.clock = setInterval(tick, 1000);
}

// ---------------------------------------------------------------------------------------------------------------
// How the call is shown: the remote video fills the stage or fits in it, the quality readout on request, full
// screen and picture-in-picture.

const STATS_KEY = 'tandem.stats';
// A phone's screen (either way up): there the remote video fills the stage unless asked to fit.
const phoneScreen = window.matchMedia('(max-width: 760px), (max-height: 480px)');
const view = {
  fill: null, // true or false once the person chose; until then, fill on a phone and fit elsewhere
  stats: readSetting(STATS_KEY) === '1',
};

function readSetting(key) {
  try {
    return localStorage.getItem(key);
  } catch {
    return null; // storage refused (private mode): settings last as long as the page
  }
}

function writeSetting(key, value) {
  try {
    localStorage.setItem(key, value);
  } catch { /* as above */ }
}

function filling() {
  return view.fill === null ? phoneScreen.matches : view.fill;
}

function renderView() {
  const active = state.phase === 'active';
  $('#view-tools').hidden = !active;
  const fill = filling();
  $('#remote-video').classList.toggle('fill', fill);
  const fillButton = $('#fill-button');
  fillButton.setAttribute('aria-pressed', String(fill));
  fillButton.title = t(fill ? 'fill.off' : 'fill.on');
  const stats = $('#stats-button');
  stats.setAttribute('aria-pressed', String(view.stats));
  stats.title = t(view.stats ? 'stats.hide' : 'stats.show');
  $('#call-stats').hidden = !(active && view.stats && state.connectedAt);
  // An audio call has no picture to fill the screen with or to float.
  const audioCall = !!(state.call && state.call.audioOnly);
  fillButton.hidden = audioCall;
  const pip = $('#pip-button');
  pip.hidden = !document.pictureInPictureEnabled || audioCall;
  const inPip = !!document.pictureInPictureElement;
  pip.setAttribute('aria-pressed', String(inPip));
  pip.title = t(inPip ? 'pip.off' : 'pip.on');
  const full = $('#fullscreen-button');
  full.hidden = !document.fullscreenEnabled;
  const isFull = !!document.fullscreenElement;
  full.setAttribute('aria-pressed', String(isFull));
  full.title = t(isFull ? 'full.off' : 'full.on');
}

function toggleFill() {
  view.fill = !filling();
  renderView();
}

function toggleStats() {
  view.stats = !view.stats;
  writeSetting(STATS_KEY, view.stats ? '1' : '0');
  renderView();
}

async function toggleFullscreen() {
  if (!document.fullscreenEnabled) return;
  try {
    if (document.fullscreenElement) await document.exitFullscreen();
    else if (state.phase === 'active') await $('#call-view').requestFullscreen({ navigationUI: 'hide' });
  } catch (err) {
    toast(() => t('full.failed', { message: err.message || err }), { kind: 'error' });
  }
}

async function togglePictureInPicture() {
  try {
    if (document.pictureInPictureElement) await document.exitPictureInPicture();
    else if (state.phase === 'active') await $('#remote-video').requestPictureInPicture();
  } catch (err) {
    toast(() => t('pip.failed', { message: err.message || err }), { kind: 'error' });
  }
}

/** Leaves full screen and picture-in-picture when the call they show ends. */
function leaveCallView() {
  if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
  if (document.pictureInPictureElement) document.exitPictureInPicture().catch(() => {});
}

/** The quality readout, in the page's language. */
function renderStats() {
  const s = state.lastStats;
  const none = '–';
  $('#stat-rtt').textContent = s && s.rttMs != null ? unit(s.rttMs, 'millisecond') : none;
  $('#stat-in').textContent = s && s.inKbps != null ? rate(s.inKbps) : none;
  $('#stat-out').textContent = s && s.outKbps != null ? rate(s.outKbps) : none;
  $('#stat-loss').textContent = s && s.lossPct != null ? percent(s.lossPct, s.lossPct < 10 ? 1 : 0) : none;
}

/** A bitrate in kbit/s, for people: 850 kb/s, 1.4 Mb/s. */
function rate(kbps) {
  return kbps >= 1000 ? unit(kbps / 1000, 'megabit-per-second', 1) : unit(kbps, 'kilobit-per-second');
}

// ---------------------------------------------------------------------------------------------------------------
// The page's language: chosen from the browser's, and switchable on the login page and in the top bar (i18n.js)

function fillLanguagePickers() {
  for (const select of document.querySelectorAll('.lang-select')) {
    select.replaceChildren(...languages().map((code) => el('option', {
      value: code, lang: code, selected: code === language(),
    }, languageName(code))));
    select.closest('.lang').hidden = languages().length < 2;
  }
}

async function chooseLanguage(ev) {
  await setLanguage(ev.target.value);
  for (const select of document.querySelectorAll('.lang-select')) select.value = language();
}

/** Says again, in the new language, every word the page shows now (the fixed ones are done by i18n.js). */
function relabel() {
  for (const select of document.querySelectorAll('.lang-select')) select.value = language();
  setBusy($('#login-button').disabled, state.busyLabel === 'login.submit' ? undefined : state.busyLabel);
  renderAccess();
  if (state.loginError) $('#login-error').textContent = state.loginError();
  if (state.connection) setConnection(...state.connection);
  if (state.users) renderUsers();
  renderRecent();
  renderStage();
  renderControls();
  renderView();
  renderStats();
  renderChatNote();
  if (document.body.dataset.view === 'call') fillDevicePickers();
  if (state.phase === 'incoming') document.title = t('title.calling', { name: state.incoming.from });
}

// ---------------------------------------------------------------------------------------------------------------
// Chat

function chatReady(ready) {
  state.chatReady = ready;
  $('#chat-input').disabled = !ready;
  $('#chat-send').disabled = !ready;
  renderChatNote();
}

function renderChatNote() {
  // Before a call, and with a tandem page, chat is there; with a caller that has none (a tutorial client), not.
  const ready = state.chatReady || state.phase !== 'active';
  $('#chat-input').placeholder = t(ready ? 'chat.placeholder' : 'chat.unavailable');
  $('#chat-note').textContent = t(ready ? 'chat.note' : 'chat.unavailableNote');
}

function addChat(who, text) {
  const time = timeOfDay(Date.now());
  const author = who === 'me' ? t('chat.you') : (state.call ? state.call.peer : '');
  const item = el('li', { class: `msg msg-${who}` },
    el('span', { class: 'msg-meta' }, `${author} · ${time}`),
    el('span', { class: 'msg-text' }, text));
  const log = $('#chat-log');
  log.append(item);
  while (log.childElementCount > LIMITS.chatMessages) log.firstElementChild.remove();
  log.scrollTop = log.scrollHeight;
  if (who === 'them' && $('#chat').hidden) {
    state.unread++;
    const badge = $('#chat-unread');
    badge.textContent = String(state.unread);
    badge.hidden = false;
    state.chatNotices.push(toast(() => t('chat.from', { name: author, text: text.length > 80 ? `${text.slice(0, 80)}…` : text }), { timeout: 4000 }));
    while (state.chatNotices.length > LIMITS.toasts) state.chatNotices.shift();
  }
}

function sendChat(ev) {
  ev.preventDefault();
  const input = $('#chat-input');
  const text = input.value.trim();
  if (!text || !state.call) return;
  if (!state.call.sendChat(text)) {
    toast(() => t('chat.notSent'), { kind: 'error' });
    return;
  }
  addChat('me', text);
  input.value = '';
}

function toggleChat(open = $('#chat').hidden) {
  $('#chat').hidden = !open;
  $('#chat-button').setAttribute('aria-expanded', String(open));
  document.body.classList.toggle('chat-open', open);
  if (open) {
    state.unread = 0;
    $('#chat-unread').hidden = true;
    // The messages are in view now: their notices have said what they had to.
    for (const n of state.chatNotices) n.dismiss();
    state.chatNotices = [];
    if (!$('#chat-input').disabled) $('#chat-input').focus();
  }
}

// ---------------------------------------------------------------------------------------------------------------
// A call that rings while the page is in the background: a notification (the person allows them when they choose,
// from the card in the side bar, never asked on page load), the tab's title, and the ring tone (scheduled on the
// audio clock, which a background tab does not slow down).

const NOTIFY_ASKED_KEY = 'tandem.notifyAsked';

/** Whether this browser can show a notification from the page itself (Android's Chrome needs a service worker). */
function canNotify() {
  return 'Notification' in window && !/Android/i.test(navigator.userAgent);
}

/** Whether the person may not be looking at this page: another tab, another window, or another application. */
function inBackground() {
  return document.visibilityState === 'hidden' || !document.hasFocus();
}

function renderNotifyCard() {
  $('#notify-card').hidden = !(canNotify() && Notification.permission === 'default' && !readSetting(NOTIFY_ASKED_KEY));
}

async function askToNotify() {
  writeSetting(NOTIFY_ASKED_KEY, '1');
  let answer = 'default';
  try {
    answer = await Notification.requestPermission();
  } catch { /* an old browser with the callback form only: treated as not answered */ }
  renderNotifyCard();
  if (answer === 'granted') toast(() => t('notify.granted'), { timeout: 4000 });
  else if (answer === 'denied') toast(() => t('notify.denied'), { timeout: 8000 });
}

/** Draws the person's attention to the call that rings: the tab's title, and a notification in the background. */
function attract() {
  const { from } = state.incoming;
  document.title = t('title.calling', { name: from });
  clearInterval(state.titleTimer);
  // In the background the title blinks, so that the tab stands out in a row of tabs.
  let on = true;
  state.titleTimer = setInterval(() => {
    on = !on || !inBackground();
    document.title = on ? t('title.calling', { name: from }) : t('title.incoming');
  }, 1000);
  if (inBackground()) notifyRinging();
}

function notifyRinging() {
  if (!state.incoming || state.callNotice || !canNotify() || Notification.permission !== 'granted') return;
  const { from, offer } = state.incoming;
  const audio = !offerHasVideo(offer);
  try {
    const n = new Notification(t('notification.calling', { name: from }), {
      body: t(audio ? 'notification.answerAudio' : 'notification.answer'),
      tag: 'tandem-call', requireInteraction: true, icon: '/favicon.svg', lang: document.documentElement.lang,
    });
    n.onclick = () => {
      window.focus();
      n.close();
      if (state.incoming && state.incoming.from === from) accept();
    };
    state.callNotice = n;
  } catch (err) {
    log(`no notification: ${err.message || err}`);
  }
}

function notifyMissed(from) {
  if (!inBackground() || !canNotify() || Notification.permission !== 'granted') return;
  try {
    const n = new Notification(t('notification.missed', { name: from }), {
      body: t('notification.seeRecent'), tag: 'tandem-missed', icon: '/favicon.svg',
      lang: document.documentElement.lang,
    });
    n.onclick = () => {
      window.focus();
      n.close();
      showList('recent');
    };
  } catch { /* as above */ }
}

function stopAttracting() {
  clearInterval(state.titleTimer);
  state.titleTimer = 0;
  document.title = 'tandem';
  if (state.callNotice) state.callNotice.close();
  state.callNotice = null;
}

// ---------------------------------------------------------------------------------------------------------------
// Recent calls: kept on this device (recent.js), shown in the second tab of the side bar

function rememberCall(entry) {
  if (!state.name) return;
  recent.add(entry);
  renderRecent();
}

/** Keeps `from`, whose call came while this page was in another call, for the notice after it (bounded). */
function noteMissedWhileBusy(from) {
  if (!state.missedWhileBusy.includes(from) && state.missedWhileBusy.length < LIMITS.missedWhileBusy) {
    state.missedWhileBusy.push(from);
  }
}

/**
 * The server tells this page (its login asked for it) who called while it was in a call: the caller was answered
 * busy, and the call never rang here. It is a missed call in the recent calls at once, and in a notice once the
 * call is over (at once if it is over already).
 */
function onMissed(msg) {
  const from = msg.name;
  if (typeof from !== 'string' || !from) return;
  rememberCall({ peer: from, dir: 'in', outcome: 'missed_busy' });
  noteMissedWhileBusy(from);
  if (state.phase === 'idle') tellMissedWhileBusy();
}

/** After a call: who tried to call while it went on (their calls never rang here). */
function tellMissedWhileBusy() {
  if (!state.missedWhileBusy.length) return;
  const names = list(state.missedWhileBusy.map((name) => t('call.quoted', { name })));
  state.missedWhileBusy = [];
  toast(() => t('call.missedWhileBusy', { names }), { timeout: 12000 });
}

const recentWords = {
  answered: (e) => t(e.dir === 'in' ? 'recent.incoming' : 'recent.outgoing'),
  missed: () => t('recent.missed'),
  missed_busy: () => t('recent.missedBusy'),
  declined: (e) => t(e.dir === 'in' ? 'recent.youDeclined' : 'recent.declined'),
  no_answer: () => t('recent.noAnswer'),
  busy: () => t('recent.busy'),
  not_online: () => t('recent.notOnline'),
  cancelled: () => t('recent.cancelled'),
  failed: () => t('recent.failed'),
};

function renderRecent() {
  const list = $('#recent-list');
  if (!list) return;
  const entries = recent.entries;
  list.replaceChildren();
  const showing = !$('#panel-recent').hidden;
  if (showing) recent.markSeen();
  for (const e of entries) {
    const missed = isMissed(e);
    const what = [recentWords[e.outcome](e)];
    if (e.audio) what.push(t('recent.audio'));
    if (e.outcome === 'answered' && e.dur !== undefined) what.push(duration(e.dur));
    what.push(when(e.at));
    const callBack = el('button', {
      type: 'button', class: 'person recent-call', 'data-peer': e.peer, title: t('recent.callBackTitle', { name: e.peer }),
    }, avatar(el('span', { class: 'avatar', 'aria-hidden': 'true' }), e.peer),
    el('span', { class: 'person-text' },
      el('span', { class: 'person-name' }, e.peer),
      el('span', { class: 'recent-what' }, icon(missed ? 'i-missed' : e.dir === 'in' ? 'i-in' : 'i-out'),
        el('span', {}, what.join(' · ')))),
    el('span', { class: 'person-call' }, el('span', { class: 'visually-hidden' }, t('recent.callBack')),
      icon(e.audio ? 'i-phone' : 'i-cam')));
    callBack.addEventListener('click', () => startCall(e.peer, { audioOnly: e.audio }));
    list.append(el('li', { class: `person-row recent-row${missed ? ' recent-missed' : ''}`, 'data-outcome': e.outcome }, callBack));
  }
  if (!entries.length) list.append(el('li', { class: 'people-empty muted' }, t('recent.none')));
  const unseen = showing ? 0 : recent.unseenMissed();
  const badge = $('#missed-count');
  badge.textContent = unseen ? String(unseen) : '';
  badge.hidden = !unseen;
  $('#tab-recent').setAttribute('aria-label', unseen ? t('tabs.recentMissed', { n: unseen }) : t('tabs.recent'));
}

/** Shows one of the side bar's lists: "people" or "recent". */
function showList(which, focus = false) {
  for (const name of ['people', 'recent']) {
    const on = name === which;
    const tab = $(`#tab-${name}`);
    tab.setAttribute('aria-selected', String(on));
    tab.tabIndex = on ? 0 : -1;
    $(`#panel-${name}`).hidden = !on;
    if (on && focus) tab.focus();
  }
  renderRecent();
}

// ---------------------------------------------------------------------------------------------------------------
// Who is online

// The list is asked for with "watch": the server then pushes it again whenever it changes (someone signs in or
// leaves, a call starts or ends), during calls too. Only if the reply does not say "watching" (an older server)
// is it asked for again every listRefreshMs while idle.
function requestUsers() {
  if (document.body.dataset.view !== 'call') return;
  const msg = { type: 'users', limit: config.listLimit, watch: true };
  if (state.query) msg.query = state.query;
  state.watching = false;
  signaling.send(msg);
  restartListTimer();
}

function restartListTimer() {
  stopListTimer();
  if (state.watching) return;
  state.listTimer = setTimeout(() => {
    if (state.phase === 'idle' && document.visibilityState === 'visible') requestUsers();
    else restartListTimer();
  }, config.listRefreshMs);
}

function stopListTimer() {
  clearTimeout(state.listTimer);
  state.listTimer = 0;
}

function onUsers(msg) {
  if (!msg.update && lookups.has(msg.query || '')) {
    finishLookUp(msg.query || '', Array.isArray(msg.users) ? msg.users.filter((u) => u && typeof u.name === 'string') : []);
  }
  if ((msg.query || '') !== state.query) return; // an answer to an older search
  if (msg.watching === true) {
    state.watching = true; // the server keeps it up to date from now on: no more asking
    stopListTimer();
  } else if (msg.update && !state.watching) {
    return; // a push for a watch this page has since replaced
  }
  const all = Array.isArray(msg.users) ? msg.users.filter((u) => u && typeof u.name === 'string') : [];
  const users = all.slice(0, LIMITS.users);
  const total = Number.isSafeInteger(msg.total) ? msg.total : all.length;
  state.users = { users, more: !!msg.more || all.length > users.length, total, query: state.query };
  const echo = users.find((u) => u.echo);
  if (echo) state.echoName = echo.name;
  else if (!state.query && !msg.more) state.echoName = '';
  renderUsers();
}

function renderUsers() {
  const { users, more, total } = state.users;
  const list = $('#people-list');
  // The list is rebuilt whenever the server pushes a change: whoever is on a button of it stays on that person's
  // button (or on the row that took its place), and the list keeps its scroll position.
  const focused = list.contains(document.activeElement) ? document.activeElement : null;
  const focusName = focused && focused.dataset.name;
  const focusClass = focused && focused.classList.contains('person-audio') ? 'person-audio' : 'person';
  const focusIndex = focused ? [...list.querySelectorAll('button')].indexOf(focused) : -1;
  const scrollTop = list.scrollTop;
  list.replaceChildren();
  const others = users.filter((u) => u.name !== state.name);
  for (const u of users) {
    const self = u.name === state.name;
    const badges = [];
    if (self) badges.push(el('span', { class: 'tag' }, t('people.you')));
    if (u.echo) badges.push(el('span', { class: 'tag tag-echo' }, t('people.echo')));
    if (u.busy && !self) badges.push(el('span', { class: 'tag tag-busy' }, t('people.busy')));
    // The button is named by its words, as they are seen (WCAG's label in name), then what a press does: "bob,
    // In a call: call". The punctuation and the last word are for screen readers only.
    const spoken = (text) => el('span', { class: 'visually-hidden' }, text);
    for (const tag of badges) tag.prepend(spoken(', '));
    const button = el('button', { type: 'button', class: 'person', 'data-name': u.name, disabled: self },
      avatar(el('span', { class: 'avatar', 'aria-hidden': 'true' }), u.name),
      el('span', { class: 'person-text' },
        el('span', { class: 'person-name' }, u.name),
        badges.length ? el('span', { class: 'person-tags' }, ...badges) : null),
      self ? null : el('span', { class: 'person-call' }, spoken(t('people.videoCall')), icon('i-cam')));
    const row = el('li', { class: 'person-row' }, button);
    if (!self) {
      button.addEventListener('click', () => startCall(u.name));
      // Beside each person, a call without video.
      const audio = el('button', {
        type: 'button', class: 'person-audio', 'data-name': u.name, 'aria-label': t('people.audioCall', { name: u.name }),
        title: t('people.audioCallTitle', { name: u.name }),
      }, icon('i-phone'));
      audio.addEventListener('click', () => startCall(u.name, { audioOnly: true }));
      row.append(audio);
    }
    list.append(row);
  }
  // The count is of the people you could call: the server's total less you and the echo test line.
  const people = Math.max(0, total - 1 - (state.echoName ? 1 : 0));
  if (state.query && !others.length) {
    list.append(el('li', { class: 'people-empty muted' }, t('people.noMatch', { query: state.query })));
  } else if (!state.query && !people) {
    list.append(el('li', { class: 'people-empty muted' }, t('people.alone')));
  }
  if (focused) {
    const buttons = [...list.querySelectorAll('button:not([disabled])')];
    const same = buttons.find((b) => b.dataset.name === focusName && b.classList.contains(focusClass));
    const near = same || buttons[Math.min(Math.max(focusIndex, 0), buttons.length - 1)];
    if (near) near.focus({ preventScroll: true });
    else focusSoftly($('#main')); // nobody left to be on: the stage, as after a call
  }
  list.scrollTop = scrollTop;
  $('#people-count').textContent = new Intl.NumberFormat(language()).format(people);
  const moreNote = $('#people-more');
  moreNote.hidden = !more;
  moreNote.textContent = more ? t('people.more', { shown: users.length, total }) : '';
  // issue 5: the "Test call" button appears when the server has an echo user.
  $('#test-call').hidden = !state.echoName;
}

/** One of the page's icons (a symbol of index.html), hidden from screen readers. */
function icon(id) {
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('class', 'icon');
  svg.setAttribute('aria-hidden', 'true');
  const use = document.createElementNS('http://www.w3.org/2000/svg', 'use');
  use.setAttribute('href', `#${id}`);
  svg.append(use);
  return svg;
}

// issue 5: a test call is a call to the echo user, who sends back what it receives.
function startTestCall() {
  if (state.echoName) startCall(state.echoName);
}

function onSearch() {
  clearTimeout(state.searchTimer);
  state.searchTimer = setTimeout(() => {
    state.query = $('#people-search').value.trim();
    requestUsers();
  }, 150);
}

// ---------------------------------------------------------------------------------------------------------------
// Rendering

function setPhase(phase) {
  if (phase !== state.phase) log(`${state.phase} → ${phase}${state.call ? ` (${state.call.role} with ${state.call.peer})` : ''}`);
  state.phase = phase;
  document.body.dataset.call = phase;
  $('#hangup-button').disabled = phase === 'idle' || phase === 'incoming';
  $('#dial-button').disabled = phase !== 'idle';
  $('#dial-audio-button').disabled = phase !== 'idle';
  $('#test-call-button').disabled = phase !== 'idle';
  if (phase === 'idle') {
    clearInterval(state.clock);
    state.clock = 0;
    state.connectedAt = 0;
    state.meter = null;
    state.lastStats = null;
    state.ringing = false;
    $('#call-duration').hidden = true;
    $('#call-state').hidden = true;
    renderStats();
    $('#chat-log').replaceChildren();
    chatReady(false);
    renderChatNote();
    toggleChat(false);
    state.unread = 0; // the messages of a call that ended are not waiting to be read in the next one
    $('#chat-unread').hidden = true;
    $('#chat-button').disabled = true;
    restartListTimer();
  } else {
    // A call started from the search or dial box: the focus leaves it, so that M and V work as the buttons say.
    const focus = document.activeElement;
    if (focus && (focus.id === 'people-search' || focus.id === 'dial-name')) focusSoftly($('#main'));
    $('#chat-button').disabled = phase !== 'active';
    // The chat stays closed until asked for: a message that comes shows on its button as a badge.
    if (phase === 'active') showCallState('connecting', 'state.connecting');
  }
  renderStage();
  renderControls();
  renderView();
  renderChatNote();
}

function renderStage() {
  const call = state.call;
  const peer = call ? call.peer : state.incoming ? state.incoming.from : '';
  $('#call-peer').textContent = peer && state.phase === 'active' ? peer : '';
  let title = '';
  let detail = '';
  let showOverlay = true;
  // In a test call the echo line mirrors our own media state: words about "the other person" would be about us.
  const echo = !!(call && state.echoName && call.peer === state.echoName);
  const audioCall = !!(call && call.audioOnly);
  document.body.toggleAttribute('data-audio-call', audioCall);
  const sending = {
    audio: !!(media.mic && media.micOn),
    video: !!(media.screen || (media.camera && media.cameraOn)),
  };
  switch (state.phase) {
    case 'idle':
      title = t('stage.ready');
      detail = t('stage.readyDetail');
      break;
    case 'outgoing':
      title = t(state.ringing ? 'stage.ringing' : 'stage.calling', { name: peer });
      detail = t(state.ringing ? 'stage.waiting' : 'stage.reaching');
      if (audioCall) detail = t('stage.audioCalling', { detail });
      break;
    case 'incoming':
      title = t('stage.isCalling', { name: peer });
      // From the offer, not the panel's buttons: the stage is drawn before ring() sets them up.
      detail = t(state.incoming && !offerHasVideo(state.incoming.offer) ? 'stage.answerAudioCall' : 'stage.answer');
      break;
    case 'active': {
      const connected = call && call.pc && call.pc.connectionState === 'connected';
      const video = $('#remote-video');
      if (!connected && !state.connectedAt) {
        title = t('stage.connecting', { name: peer });
        detail = t('stage.connectingDetail');
      } else if (audioCall) {
        title = peer;
        detail = t('stage.audioCall');
      } else if (echo && !sending.video) {
        // The echo line sends back what it gets: no video from it means none from us.
        title = peer;
        detail = t(media.camera ? 'stage.echoCameraOff' : 'stage.echoNoCamera');
      } else if (!state.peerMedia.video) {
        title = peer;
        detail = t('stage.cameraOff');
      } else if (!video.videoWidth) {
        title = peer;
        detail = t('stage.waitingVideo');
      } else {
        showOverlay = false;
      }
    }
  }
  $('#stage-title').textContent = title;
  $('#stage-detail').textContent = detail;
  $('#remote-overlay').hidden = !showOverlay;
  avatar($('#remote-avatar'), peer || state.name);
  $('#remote-avatar').hidden = !peer;
  const flags = $('#remote-flags');
  flags.replaceChildren();
  if (state.phase === 'active' && echo) {
    if (!sending.audio) {
      flags.append(el('span', { class: 'flag' }, t(media.mic ? 'flag.echoMuted' : 'flag.noMic')));
    }
  } else if (state.phase === 'active') {
    if (!state.peerMedia.audio) flags.append(el('span', { class: 'flag' }, t('flag.muted', { name: peer })));
    if (state.peerMedia.screen) flags.append(el('span', { class: 'flag' }, t('flag.sharing', { name: peer })));
  }
}

function renderControls() {
  // Toggle buttons keep their names; aria-pressed (and the crossed-out icon) says whether the toggle is on.
  const mic = $('#mic-button');
  const micOff = !media.mic || !media.micOn;
  mic.setAttribute('aria-pressed', String(micOff));
  mic.title = t(micOff ? 'mic.unmute' : 'mic.mute');
  mic.classList.toggle('ctl-off', micOff);

  // In an audio call no video is sent: the camera and the screen have nothing to do.
  const audioCall = !!(state.call && state.call.audioOnly);
  const cam = $('#cam-button');
  const camOff = !media.camera || !media.cameraOn || audioCall;
  cam.setAttribute('aria-pressed', String(camOff));
  cam.title = t(audioCall ? 'cam.audioCall' : camOff ? 'cam.on' : 'cam.off');
  cam.classList.toggle('ctl-off', camOff);
  cam.disabled = audioCall;
  $('#local-off').hidden = !!media.screen || !camOff;

  const screen = $('#screen-button');
  screen.disabled = audioCall;
  screen.setAttribute('aria-pressed', String(!!media.screen));
  screen.title = t(media.screen ? 'screen.stop' : 'screen.start');
  screen.classList.toggle('ctl-active', !!media.screen);
  screen.hidden = !(navigator.mediaDevices && navigator.mediaDevices.getDisplayMedia);
}

function setConnection(s, retryIn = 0) {
  state.connection = [s, retryIn];
  const box = $('#conn-status');
  box.dataset.state = s;
  const words = {
    online: () => t('conn.online'),
    connecting: () => t('conn.connecting'),
    reconnecting: () => (retryIn >= 1500 ? t('conn.reconnectingIn', { time: unit(Math.round(retryIn / 1000), 'second') })
      : t('conn.reconnecting')),
    offline: () => t('conn.offline'),
  };
  $('#conn-text').textContent = words[s] ? words[s]() : s;
}

// ---------------------------------------------------------------------------------------------------------------
// Signaling events

signaling.addEventListener('message', (ev) => {
  const msg = ev.detail;
  if (msg.type !== 'candidate' && msg.type !== 'users') {
    log(`got ${msg.type}${msg.name ? ` from ${msg.name}` : ''}${msg.code ? ` (${msg.code})` : ''}${msg.reason ? ` (${msg.reason})` : ''}`);
  }
  switch (msg.type) {
    case 'offer': onOffer(msg); break;
    case 'answer': onAnswer(msg); break;
    case 'candidate': onCandidate(msg); break;
    case 'leave': onLeave(msg); break;
    case 'ringing': onRinging(msg); break;
    case 'missed': onMissed(msg); break;
    case 'users': onUsers(msg); break;
    case 'error': onError(msg); break;
  }
});

signaling.addEventListener('state', (ev) => {
  if (document.body.dataset.view !== 'call') return;
  const { state: s, retryIn } = ev.detail;
  setConnection(s, retryIn);
  if (s === 'reconnecting' && retryIn && signaling.attempt === 1) {
    toast(() => t('server.lost'), { timeout: 5000 });
  }
});

signaling.addEventListener('resumed', (ev) => {
  const reply = ev.detail;
  if (Array.isArray(reply.iceServers)) state.iceServers = reply.iceServers;
  saveSession(reply);
  useEchoName(reply);
  setConnection('online');
  toast(() => t('server.back'), { timeout: 2500 });
  const call = state.call;
  if (reply.peer) {
    if (call && call.peer === reply.peer) call.signalingResumed();
    else if (!(state.incoming && state.incoming.from === reply.peer)) signaling.send({ type: 'leave', name: reply.peer });
  } else if (state.phase === 'outgoing') {
    const peer = call.peer;
    endCall(() => t('call.lost', { name: peer }), 'error');
  } else if (state.phase === 'incoming') {
    const from = state.incoming.from;
    missedCall('missed');
    toast(() => t('call.missedOffline', { name: from }));
  }
  if (!reply.peer && state.phase === 'active' && call) {
    // The server no longer knows this call (it restarted), while media still flows peer to peer: rejoin.
    call.rejoin();
  }
  requestUsers();
});

signaling.addEventListener('lost', (ev) => {
  const { reason } = ev.detail;
  const had = state.call;
  if (state.incoming) missedCall('missed');
  if (had) {
    // With "replaced" the call moved to the other tab with the session; say nothing to the peer.
    endCall('');
  }
  stopRinging();
  media.stop();
  stopListTimer();
  sessionStorage.removeItem(SESSION_KEY);
  const lostName = state.name;
  const err = { code: reason, sent: ev.detail.sent || '' };
  refused(err); // a credential the server no longer takes (a token that expired, a device signed out)
  renderAccess();
  const error = reason === 'replaced' ? () => t('login.replaced')
    : refusalText(err) ? () => refusalText(err) : () => t('login.nameLost', { name: lostName });
  showLogin({ name: state.name, error });
});

// ---------------------------------------------------------------------------------------------------------------
// Wiring

function wire() {
  $('#login-form').addEventListener('submit', submitLogin);
  for (const select of document.querySelectorAll('.lang-select')) select.addEventListener('change', chooseLanguage);
  $('#logout-button').addEventListener('click', signOut);
  $('#people-search').addEventListener('input', onSearch);
  $('#dial-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    dial($('#dial-name').value, { audioOnly: !!(ev.submitter && ev.submitter.id === 'dial-audio-button') });
  });
  $('#test-call-button').addEventListener('click', startTestCall);
  $('#notify-button').addEventListener('click', askToNotify);
  $('#notify-dismiss').addEventListener('click', () => {
    writeSetting(NOTIFY_ASKED_KEY, '1');
    renderNotifyCard();
  });
  // A call that started ringing while the page was in front, and is left ringing as the person turns away.
  const turnedAway = () => { if (state.phase === 'incoming' && inBackground()) notifyRinging(); };
  document.addEventListener('visibilitychange', turnedAway);
  window.addEventListener('blur', turnedAway);
  // Any click or key on the page lets it play sound from then on (after a reload nothing was clicked yet).
  for (const type of ['pointerdown', 'keydown']) document.addEventListener(type, () => tone.unlock(), { capture: true });
  $('#tab-people').addEventListener('click', () => showList('people'));
  $('#tab-recent').addEventListener('click', () => showList('recent'));
  $('.tabs').addEventListener('keydown', (ev) => {
    // The tabs' keys: the arrows move between them, Home and End go to the first and the last.
    const order = ['people', 'recent'];
    const now = order.indexOf($('#tab-recent').getAttribute('aria-selected') === 'true' ? 'recent' : 'people');
    const next = { ArrowLeft: now - 1, ArrowRight: now + 1, Home: 0, End: order.length - 1 }[ev.key];
    if (next === undefined) return;
    ev.preventDefault();
    showList(order[(next + order.length) % order.length], true);
  });
  $('#accept-button').addEventListener('click', () => accept());
  $('#accept-audio-button').addEventListener('click', () => accept({ audioOnly: true }));
  $('#decline-button').addEventListener('click', decline);
  $('#hangup-button').addEventListener('click', hangUp);
  $('#mic-button').addEventListener('click', toggleMic);
  $('#cam-button').addEventListener('click', toggleCamera);
  $('#screen-button').addEventListener('click', toggleScreen);
  $('#devices-button').addEventListener('click', () => toggleDevices());
  $('#camera-select').addEventListener('change', (ev) => pickDevice('video', ev.target));
  $('#mic-select').addEventListener('change', (ev) => pickDevice('audio', ev.target));
  $('#chat-button').addEventListener('click', () => toggleChat());
  $('#chat-close').addEventListener('click', () => toggleChat(false));
  $('#chat-form').addEventListener('submit', sendChat);
  $('#stats-button').addEventListener('click', toggleStats);
  $('#fill-button').addEventListener('click', toggleFill);
  $('#pip-button').addEventListener('click', togglePictureInPicture);
  $('#fullscreen-button').addEventListener('click', toggleFullscreen);
  $('#remote-video').addEventListener('dblclick', toggleFill);
  $('#remote-video').addEventListener('enterpictureinpicture', renderView);
  $('#remote-video').addEventListener('leavepictureinpicture', renderView);
  document.addEventListener('fullscreenchange', renderView);
  phoneScreen.addEventListener('change', renderView);
  $('#remote-video').addEventListener('resize', renderStage);
  $('#remote-video').addEventListener('loadedmetadata', renderStage);
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible' && state.phase === 'idle' && document.body.dataset.view === 'call' &&
      !state.watching) {
      requestUsers();
    }
  });
  document.addEventListener('keydown', (ev) => {
    if (document.body.dataset.view !== 'call') return;
    if (ev.key === 'Escape') {
      if (!$('#devices').hidden) toggleDevices(false);
      else if (!$('#chat').hidden) toggleChat(false);
      return;
    }
    const t = ev.target;
    const typing = t instanceof HTMLInputElement || t instanceof HTMLTextAreaElement || t instanceof HTMLSelectElement;
    if (typing || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (ev.key === 'm' || ev.key === 'M') toggleMic();
    else if (ev.key === 'v' || ev.key === 'V') toggleCamera();
    else if ((ev.key === 'f' || ev.key === 'F') && state.phase === 'active') toggleFullscreen();
  });
  window.addEventListener('pagehide', () => tone.stop());
  window.addEventListener('resize', placeNotices);
}

async function boot() {
  wire(); // at once: a name typed and sent while the language loads is not lost
  onLanguageChange(relabel);
  await startLanguage(); // before the page says anything of its own: no flash of another language
  fillLanguagePickers();
  renderControls();
  renderView();
  renderChatNote();
  await loadAccess(); // what the server's mode needs, and an invite or a token in the address
  renderAccess();
  listenForTokens(() => {
    // A token from the page that embeds this one: sign in with it, or keep it for the next reconnect.
    renderAccess();
    if (document.body.dataset.view === 'login' && !$('#login-button').disabled) signIn('', '');
    else signaling.setCredentials({ jwt: access.jwt });
  });
  const saved = loadSession();
  const device = storedDevice();
  if (state.signInStarted) {
    // The person signed in while the page was starting: leave that sign-in (and its outcome) alone.
  } else if (saved) {
    // A reload in the same tab: take the name back with the resume token.
    $('#login-name').value = saved.name;
    document.body.dataset.view = 'login';
    signIn(saved.name, saved.token);
  } else if (access.jwt || access.invite) {
    // Opened by the app with a token, or by an invite link: straight in (an invite without a name asks for one).
    document.body.dataset.view = 'login';
    signIn('', '');
  } else if (device && (access.mode === 'password' || access.mode === 'accounts')) {
    // This device signed in before: back in, without the password.
    $('#login-name').value = device.name;
    document.body.dataset.view = 'login';
    signIn(device.name, '');
  } else {
    showLogin({ name: params.get('name') || '' });
  }
}

boot();
