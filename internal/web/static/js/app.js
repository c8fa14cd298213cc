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
import { LocalMedia } from './media.js';
import { Call, sdpHasVideo } from './call.js';
import { CandidateQueue, LIMITS, drop, dropped } from './limits.js';
import { RecentCalls, isMissed } from './recent.js';
import { StatsMeter, formatRate } from './stats.js';
import { Tone } from './tone.js';
import { $, avatar, el, focusSoftly, formatDuration, formatWhen, toast, validateName } from './ui.js';

const params = new URLSearchParams(window.location.search);

/** Settings a deployment or a test may change through the page's query string. */
const config = {
  // How long an outgoing call rings before the caller gives up (leave with reason no_answer).
  ringTimeoutMs: secondsParam('ringTimeout', 30) * 1000,
  // How long an incoming call rings when the caller never gives up (a tutorial client has no ring timeout).
  incomingTimeoutMs: secondsParam('incomingTimeout', 60) * 1000,
  // How many people the online list shows at once; the rest are found by searching.
  listLimit: 20,
  // How often the online list refreshes while the page is idle.
  listRefreshMs: 30000,
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

function showLogin({ name = '', error = '' } = {}) {
  document.body.dataset.view = 'login';
  $('#login-view').hidden = false;
  $('#call-view').hidden = true;
  $('#incoming').hidden = true;
  setBusy(false);
  if (name) $('#login-name').value = name;
  $('#login-error').textContent = error;
  $('#login-name').setAttribute('aria-invalid', error ? 'true' : 'false');
  document.title = 'tandem';
  $('#login-name').focus();
}

function setBusy(busy, label = 'Signing in…') {
  const button = $('#login-button');
  button.disabled = busy;
  button.classList.toggle('loading', busy);
  button.querySelector('.btn-label').textContent = busy ? label : 'Sign in';
}

async function submitLogin(ev) {
  ev.preventDefault();
  const input = $('#login-name');
  const { name, error } = validateName(input.value);
  if (error) {
    showLogin({ error });
    return;
  }
  tone.unlock(); // a user gesture: from now on the page may ring
  await signIn(name, '');
}

async function signIn(name, token) {
  setBusy(true, token ? 'Signing you back in…' : 'Signing in…');
  $('#login-error').textContent = '';
  let reply;
  try {
    reply = await signaling.login(name, token);
  } catch (err) {
    if (err instanceof LoginError && err.code === 'superseded') return;
    sessionStorage.removeItem(SESSION_KEY);
    showLogin({ name, error: loginErrorText(err, name) });
    return;
  }
  enterCallView(reply);
}

function loginErrorText(err, name) {
  switch (err.code) {
    case 'name_taken': return `Somebody online is already called “${name}”. Pick another name.`;
    case 'invalid_name': return 'That name cannot be used. Use 1 to 64 characters, with no invisible ones.';
    case 'unreachable': return err.message;
    default: return err.message || 'The server refused to sign you in. Try again.';
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
    toast(`Your call with ${reply.peer} ended when the page reloaded.`);
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
  toast('You stopped sharing your screen.');
});

function toggleMic() {
  if (!media.mic) {
    toast('No microphone is available. Check the browser’s permissions, then reload.', { kind: 'error' });
    return;
  }
  media.setMic(!media.micOn);
  if (state.call) state.call.sendMediaState();
  renderStage();
  toast(media.micOn ? 'Microphone on.' : 'Microphone muted.', { timeout: 1500 });
}

function toggleCamera() {
  if (state.call && state.call.audioOnly) {
    toast('This is an audio call: no video is sent.', { timeout: 2500 });
    return;
  }
  if (!media.camera) {
    toast('No camera is available. Check the browser’s permissions, then reload.', { kind: 'error' });
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
      toast('You are sharing your screen.', { timeout: 2500 });
    }
  } catch (err) {
    if (err && err.name === 'NotAllowedError') return; // the person cancelled the picker
    toast(`Screen sharing did not start: ${err.message || err}`, { kind: 'error' });
    return;
  }
  if (state.call) await state.call.replaceTrack('video', media.video);
  renderControls();
}

async function fillDevicePickers() {
  const { cameras, mics } = await media.devices();
  fillSelect($('#camera-select'), cameras, media.cameraId, 'No camera found');
  fillSelect($('#mic-select'), mics, media.micId, 'No microphone found');
}

function fillSelect(select, devices, current, emptyLabel) {
  select.replaceChildren();
  if (!devices.length) {
    select.append(el('option', { value: '' }, emptyLabel));
    select.disabled = true;
    return;
  }
  select.disabled = false;
  for (const d of devices) select.append(el('option', { value: d.id, selected: d.id === current }, d.label));
}

async function pickDevice(kind, select) {
  if (!select.value) return;
  try {
    await media.useDevice(kind, select.value);
  } catch (err) {
    toast(`That ${kind === 'audio' ? 'microphone' : 'camera'} could not be started.`, { kind: 'error' });
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
      const names = same.map((u) => `“${u.name}”`).join(' or ');
      toast(`Nobody online is called “${name}” with those capitals. Did you mean ${names}? Names are case-sensitive.`,
        { kind: 'error' });
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
    toast(error, { kind: 'error' });
    return;
  }
  if (name === state.name) {
    toast('That’s you. Pick someone else to call.', { kind: 'error' });
    return;
  }
  if (state.phase === 'incoming' && state.incoming.from === name) {
    await accept({ audioOnly }); // they called us first: pick up rather than call back
    return;
  }
  if (state.phase !== 'idle') {
    toast('You are already in a call. Hang up first.', { kind: 'error' });
    return;
  }
  if (signaling.state !== 'online') {
    toast('Not connected to the server right now. The page reconnects by itself; try again in a moment.', { kind: 'error' });
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
    if (state.call === call) endCall(`The call could not be started: ${err.message || err}`, 'error');
    return;
  }
  if (state.call !== call || state.phase !== 'outgoing') return;
  clearTimeout(state.ringTimer);
  state.ringTimer = setTimeout(() => {
    if (state.call !== call || state.phase !== 'outgoing') return;
    signaling.send({ type: 'leave', name, reason: 'no_answer' });
    endCall(`${name} didn’t answer.`, 'info', 'no_answer');
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
  call.addEventListener('described', () => {
    if (state.call !== call) return;
    if (call.audioOnly && !call.wantsAudioOnly && !call.toldAudioOnly) {
      // The other side answered, or called, without video.
      call.toldAudioOnly = true;
      if (call.role === 'caller') toast(`${peer} answered without video: this is an audio call.`, { timeout: 4000 });
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
  call.addEventListener('restart', () => { if (state.call === call) showCallState('restarting', 'Reconnecting…'); });
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
    // The server answers `busy` for us while we are in a call, and we never hear of it; but an offer can cross our
    // own (we started calling someone else as it came). It never rang here: say so once this call is over.
    rememberCall({ peer: from, dir: 'in', outcome: 'missed_busy', audio: !sdpHasVideo(msg.offer.sdp) });
    if (!state.missedWhileBusy.includes(from) && state.missedWhileBusy.length < LIMITS.missedWhileBusy) {
      state.missedWhileBusy.push(from);
    }
    return;
  }
  state.incoming = { from, offer: msg.offer, candidates: new CandidateQueue(from) };
  setPhase('incoming');
  ring(from);
}

function ring(from) {
  state.ringStartedAt = Date.now();
  $('#incoming-title').textContent = from;
  // A call without video is answered without video: the choice is the caller's.
  const video = sdpHasVideo(state.incoming.offer && state.incoming.offer.sdp);
  $('#incoming-detail').textContent = video ? 'is calling you' : 'is calling you, audio only';
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
    toast(`Missed call from ${from}.`);
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
    audioOnly: audioOnly || !sdpHasVideo(offer && offer.sdp), startedAt: state.ringStartedAt || Date.now(),
  });
  setPhase('active');
  await mediaReady;
  if (state.call !== call) return;
  try {
    await call.answer(offer, candidates);
  } catch (err) {
    if (state.call !== call) return; // ended meanwhile
    signaling.send({ type: 'leave', name: from });
    endCall(`The call with ${from} could not be set up: ${err.message || err}`, 'error');
  }
}

/** Ends the ringing call, which was not answered here (missed, or declined), and puts it in the recent calls. */
function missedCall(outcome) {
  const { from, offer } = state.incoming;
  if (outcome === 'missed') notifyMissed(from);
  rememberCall({ peer: from, dir: 'in', outcome, audio: !sdpHasVideo(offer && offer.sdp), at: state.ringStartedAt });
  stopRinging();
  setPhase('idle');
}

function decline() {
  if (state.phase !== 'incoming') return;
  const from = state.incoming.from;
  signaling.send({ type: 'leave', name: from, reason: 'declined' });
  missedCall('declined');
  toast(`You declined the call from ${from}.`, { timeout: 2500 });
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
  endCall(cancelled ? 'Call cancelled.' : callSummary(call.peer), 'info', 'cancelled');
}

function callSummary(peer) {
  const d = state.connectedAt ? ` after ${formatDuration(Date.now() - state.connectedAt)}` : '';
  return `Call with ${peer} ended${d}.`;
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
    endCall(`The call with ${call.peer} could not be set up: ${err.message || err}`, 'error');
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
  declined: (n) => `${n} declined the call.`,
  no_answer: (n) => `${n} didn’t answer.`,
  cancelled: (n) => `${n} hung up.`,
  disconnected: (n) => `${n}’s connection to the server was lost.`,
  renamed: (n) => `${n} left.`,
  shutdown: () => 'The server is restarting, so the call ended.',
};

function onLeave(msg) {
  const reason = msg.reason || 'hangup';
  if (state.phase === 'incoming' && (!msg.name || msg.name === state.incoming.from)) {
    const from = state.incoming.from;
    missedCall('missed');
    toast(reason === 'shutdown' ? leaveWords.shutdown() : `Missed call from ${from}.`);
    return;
  }
  const call = state.call;
  if (!call || (msg.name && msg.name !== call.peer)) return;
  const peer = call.peer;
  let words;
  let outcome = 'failed';
  if (state.phase === 'outgoing') {
    // A tutorial client that refuses a call just sends a bare leave.
    words = reason === 'hangup' ? leaveWords.declined(peer) : (leaveWords[reason] || leaveWords.declined)(peer);
    outcome = reason === 'no_answer' ? 'no_answer' : reason === 'hangup' || reason === 'declined' ? 'declined' : 'failed';
  } else if (reason === 'hangup') {
    words = `${peer} hung up. ${callSummary(peer)}`;
  } else {
    words = `${(leaveWords[reason] || leaveWords.renamed)(peer)} ${callSummary(peer)}`;
  }
  endCall(words, 'info', outcome);
}

const errorWords = {
  busy: (n) => `${n} is in another call. Try again later.`,
  not_online: (n) => `${n} is not online.`,
  self_call: () => 'That’s you. Pick someone else to call.',
};

function onError(msg) {
  const call = state.call;
  const aboutCall = call && (!msg.name || msg.name === call.peer);
  if (msg.request === 'offer' && aboutCall && state.phase === 'outgoing') {
    const words = errorWords[msg.code];
    const outcome = msg.code === 'busy' || msg.code === 'not_online' ? msg.code : 'failed';
    endCall(words ? words(call.peer) : `The call could not be placed: ${msg.message || msg.code}.`, 'error', outcome);
    return;
  }
  if (msg.request === 'offer' && aboutCall && state.phase === 'active') {
    // A renegotiation (ICE restart, rejoin) the server could not deliver.
    const s = call.pc ? call.pc.connectionState : 'closed';
    if (msg.code === 'not_online' && (s === 'failed' || s === 'disconnected')) {
      endCall(`${call.peer} is no longer online. ${callSummary(call.peer)}`);
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
      toast('The server is asking this page to slow down.', { kind: 'error' });
      return;
    default:
      toast(`The server reported a problem: ${msg.message || msg.code || 'unknown error'}.`, { kind: 'error' });
  }
}

function connectionState(s) {
  if (s === 'connected') {
    if (!state.connectedAt) startClock();
    showCallState('connected', 'Connected');
  } else if (s === 'connecting' || s === 'new') {
    showCallState('connecting', state.connectedAt ? 'Reconnecting…' : 'Connecting…');
  } else if (s === 'disconnected') {
    showCallState('restarting', 'Connection unstable…');
  } else if (s === 'failed') {
    showCallState('failed', 'Connection lost, retrying…');
  }
  renderStage();
}

function showCallState(kind, text) {
  const pill = $('#call-state');
  pill.dataset.state = kind;
  pill.textContent = text;
  pill.hidden = false;
}

function startClock() {
  state.connectedAt = Date.now();
  const call = state.call;
  state.meter = call ? new StatsMeter(call.pc) : null;
  const tick = async () => {
    $('#call-duration').textContent = formatDuration(Date.now() - state.connectedAt);
    if (state.meter && state.call === call) {
      try {
        const s = await state.meter.sample();
        state.lastStats = s;
        $('#stat-rtt').textContent = s.rttMs == null ? '–' : `${s.rttMs} ms`;
        $('#stat-in').textContent = formatRate(s.inKbps);
        $('#stat-out').textContent = formatRate(s.outKbps);
        $('#stat-loss').textContent = s.lossPct == null ? '–' : `${s.lossPct.toFixed(s.lossPct < 10 ? 1 : 0)} %`;
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
  fillButton.title = fill ? 'Fit the whole video on the screen (double-click the video)' : 'Fill the screen with the video (double-click the video)';
  const stats = $('#stats-button');
  stats.setAttribute('aria-pressed', String(view.stats));
  stats.title = view.stats ? 'Hide the call quality' : 'Show the call quality';
  $('#call-stats').hidden = !(active && view.stats && state.connectedAt);
  // An audio call has no picture to fill the screen with or to float.
  const audioCall = !!(state.call && state.call.audioOnly);
  fillButton.hidden = audioCall;
  const pip = $('#pip-button');
  pip.hidden = !document.pictureInPictureEnabled || audioCall;
  const inPip = !!document.pictureInPictureElement;
  pip.setAttribute('aria-pressed', String(inPip));
  pip.title = inPip ? 'Bring the video back into the page' : 'Picture in picture: keep the video on top of other windows';
  const full = $('#fullscreen-button');
  full.hidden = !document.fullscreenEnabled;
  const isFull = !!document.fullscreenElement;
  full.setAttribute('aria-pressed', String(isFull));
  full.title = isFull ? 'Leave full screen (F)' : 'Full screen (F)';
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
    toast(`Full screen is not available here: ${err.message || err}`, { kind: 'error' });
  }
}

async function togglePictureInPicture() {
  try {
    if (document.pictureInPictureElement) await document.exitPictureInPicture();
    else if (state.phase === 'active') await $('#remote-video').requestPictureInPicture();
  } catch (err) {
    toast(`Picture in picture is not available now: ${err.message || err}`, { kind: 'error' });
  }
}

/** Leaves full screen and picture-in-picture when the call they show ends. */
function leaveCallView() {
  if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
  if (document.pictureInPictureElement) document.exitPictureInPicture().catch(() => {});
}

// ---------------------------------------------------------------------------------------------------------------
// Chat

function chatReady(ready) {
  $('#chat-input').disabled = !ready;
  $('#chat-send').disabled = !ready;
  $('#chat-input').placeholder = ready ? 'Write a message' : 'Chat is not available';
  $('#chat-note').textContent = ready
    ? 'Messages go straight to the other person and are not stored.'
    : 'Chat is not available with this caller.';
}

function addChat(who, text) {
  const time = new Date().toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  const author = who === 'me' ? 'You' : (state.call ? state.call.peer : '');
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
    state.chatNotices.push(toast(`${author}: ${text.length > 80 ? `${text.slice(0, 80)}…` : text}`, { timeout: 4000 }));
    while (state.chatNotices.length > LIMITS.toasts) state.chatNotices.shift();
  }
}

function sendChat(ev) {
  ev.preventDefault();
  const input = $('#chat-input');
  const text = input.value.trim();
  if (!text || !state.call) return;
  if (!state.call.sendChat(text)) {
    toast('The message could not be sent: chat is not connected.', { kind: 'error' });
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
  if (answer === 'granted') toast('You will be notified of calls while this tab is in the background.', { timeout: 4000 });
  else if (answer === 'denied') toast('Notifications are blocked for this page. Allow them in the browser’s site settings to be told of calls in other tabs.', { timeout: 8000 });
}

/** Draws the person's attention to the call that rings: the tab's title, and a notification in the background. */
function attract() {
  const { from } = state.incoming;
  const ringing = `${from} is calling…`;
  document.title = `☎ ${ringing}`;
  clearInterval(state.titleTimer);
  // In the background the title blinks, so that the tab stands out in a row of tabs.
  let on = true;
  state.titleTimer = setInterval(() => {
    on = !on || !inBackground();
    document.title = on ? `☎ ${ringing}` : '☎ Incoming call · tandem';
  }, 1000);
  if (inBackground()) notifyRinging();
}

function notifyRinging() {
  if (!state.incoming || state.callNotice || !canNotify() || Notification.permission !== 'granted') return;
  const { from, offer } = state.incoming;
  const audio = !sdpHasVideo(offer && offer.sdp);
  try {
    const n = new Notification(`${from} is calling`, {
      body: audio ? 'Audio call. Click to answer.' : 'Click to answer.',
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
    const n = new Notification(`Missed call from ${from}`, {
      body: 'Click to see your recent calls.', tag: 'tandem-missed', icon: '/favicon.svg',
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

/** After a call: who tried to call while it went on (their calls never rang here). */
function tellMissedWhileBusy() {
  if (!state.missedWhileBusy.length) return;
  const names = state.missedWhileBusy.map((n) => `“${n}”`).join(', ');
  state.missedWhileBusy = [];
  toast(`While you were in a call, ${names} tried to call you. See Recent to call back.`, { timeout: 12000 });
}

const recentWords = {
  answered: (e) => (e.dir === 'in' ? 'Incoming' : 'Outgoing'),
  missed: () => 'Missed call',
  missed_busy: () => 'Missed: you were in a call',
  declined: (e) => (e.dir === 'in' ? 'You declined' : 'Declined'),
  no_answer: () => 'No answer',
  busy: () => 'Busy in another call',
  not_online: () => 'Not online',
  cancelled: () => 'Cancelled',
  failed: () => 'Could not connect',
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
    if (e.audio) what.push('audio');
    if (e.outcome === 'answered' && e.dur !== undefined) what.push(formatDuration(e.dur));
    what.push(formatWhen(e.at));
    const callBack = el('button', {
      type: 'button', class: 'person recent-call', 'data-peer': e.peer, title: `Call ${e.peer} back`,
    }, avatar(el('span', { class: 'avatar', 'aria-hidden': 'true' }), e.peer),
    el('span', { class: 'person-text' },
      el('span', { class: 'person-name' }, e.peer),
      el('span', { class: 'recent-what' }, icon(missed ? 'i-missed' : e.dir === 'in' ? 'i-in' : 'i-out'),
        el('span', {}, what.join(' · ')))),
    el('span', { class: 'person-call' }, el('span', { class: 'visually-hidden' }, ': call back'),
      icon(e.audio ? 'i-phone' : 'i-cam')));
    callBack.addEventListener('click', () => startCall(e.peer, { audioOnly: e.audio }));
    list.append(el('li', { class: `person-row recent-row${missed ? ' recent-missed' : ''}`, 'data-outcome': e.outcome }, callBack));
  }
  if (!entries.length) list.append(el('li', { class: 'people-empty muted' }, 'No calls yet.'));
  const unseen = showing ? 0 : recent.unseenMissed();
  const badge = $('#missed-count');
  badge.textContent = unseen ? String(unseen) : '';
  badge.hidden = !unseen;
  $('#tab-recent').setAttribute('aria-label', unseen ? `Recent, ${unseen} missed` : 'Recent');
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

function requestUsers() {
  if (document.body.dataset.view !== 'call') return;
  const msg = { type: 'users', limit: config.listLimit };
  if (state.query) msg.query = state.query;
  signaling.send(msg);
  restartListTimer();
}

function restartListTimer() {
  stopListTimer();
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
  if (lookups.has(msg.query || '')) {
    finishLookUp(msg.query || '', Array.isArray(msg.users) ? msg.users.filter((u) => u && typeof u.name === 'string') : []);
  }
  if ((msg.query || '') !== state.query) return; // an answer to an older search
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
  list.replaceChildren();
  const others = users.filter((u) => u.name !== state.name);
  for (const u of users) {
    const self = u.name === state.name;
    const badges = [];
    if (self) badges.push(el('span', { class: 'tag' }, 'You'));
    if (u.echo) badges.push(el('span', { class: 'tag tag-echo' }, 'Test line'));
    if (u.busy && !self) badges.push(el('span', { class: 'tag tag-busy' }, 'In a call'));
    // The button is named by its words, as they are seen (WCAG's label in name), then what a press does: "bob,
    // In a call: call". The punctuation and the last word are for screen readers only.
    const spoken = (text) => el('span', { class: 'visually-hidden' }, text);
    for (const tag of badges) tag.prepend(spoken(', '));
    const button = el('button', { type: 'button', class: 'person', 'data-name': u.name, disabled: self },
      avatar(el('span', { class: 'avatar', 'aria-hidden': 'true' }), u.name),
      el('span', { class: 'person-text' },
        el('span', { class: 'person-name' }, u.name),
        badges.length ? el('span', { class: 'person-tags' }, ...badges) : null),
      self ? null : el('span', { class: 'person-call' }, spoken(': video call'), icon('i-cam')));
    const row = el('li', { class: 'person-row' }, button);
    if (!self) {
      button.addEventListener('click', () => startCall(u.name));
      // Beside each person, a call without video.
      const audio = el('button', {
        type: 'button', class: 'person-audio', 'data-name': u.name, 'aria-label': `Audio call: ${u.name}`,
        title: `Call ${u.name} without video`,
      }, icon('i-phone'));
      audio.addEventListener('click', () => startCall(u.name, { audioOnly: true }));
      row.append(audio);
    }
    list.append(row);
  }
  // The count is of the people you could call: the server's total less you and the echo test line.
  const people = Math.max(0, total - 1 - (state.echoName ? 1 : 0));
  if (state.query && !others.length) {
    list.append(el('li', { class: 'people-empty muted' }, `Nobody online has a name starting with “${state.query}”.`));
  } else if (!state.query && !people) {
    list.append(el('li', { class: 'people-empty muted' },
      'Nobody else is online yet. Share this page’s address with someone to call them.'));
  }
  $('#people-count').textContent = `${people}`;
  $('#people-count').setAttribute('aria-label', people === 1 ? '1 other person online' : `${people} other people online`);
  const moreNote = $('#people-more');
  moreNote.hidden = !more;
  moreNote.textContent = more ? `Showing the first ${users.length} of ${total}. Type a name to find someone.` : '';
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
    for (const id of ['#stat-rtt', '#stat-in', '#stat-out', '#stat-loss']) $(id).textContent = '–';
    $('#chat-log').replaceChildren();
    chatReady(false);
    $('#chat-note').textContent = 'Messages go straight to the other person and are not stored.';
    toggleChat(false);
    $('#chat-button').disabled = true;
    restartListTimer();
  } else {
    // A call started from the search or dial box: the focus leaves it, so that M and V work as the buttons say.
    const focus = document.activeElement;
    if (focus && (focus.id === 'people-search' || focus.id === 'dial-name')) focusSoftly($('#main'));
    $('#chat-button').disabled = phase !== 'active';
    // The chat stays closed until asked for: a message that comes shows on its button as a badge.
    if (phase === 'active') showCallState('connecting', 'Connecting…');
  }
  renderStage();
  renderControls();
  renderView();
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
      title = 'Ready when you are';
      detail = 'Pick someone from the list, or type a name, to call them.';
      break;
    case 'outgoing':
      title = state.ringing ? `Ringing ${peer}…` : `Calling ${peer}…`;
      detail = state.ringing ? 'Waiting for them to answer.' : 'Reaching their device.';
      if (audioCall) detail = `Audio call. ${detail}`;
      break;
    case 'incoming':
      title = `${peer} is calling`;
      detail = $('#accept-audio-button').hidden ? 'An audio call. Answer with Accept or Decline.'
        : 'Answer with Accept, or Audio only to answer without video, or Decline.';
      break;
    case 'active': {
      const connected = call && call.pc && call.pc.connectionState === 'connected';
      const video = $('#remote-video');
      if (!connected && !state.connectedAt) {
        title = `Connecting to ${peer}…`;
        detail = 'Setting up a direct connection.';
      } else if (audioCall) {
        title = peer;
        detail = 'Audio call: no video either way.';
      } else if (echo && !sending.video) {
        // The echo line sends back what it gets: no video from it means none from us.
        title = peer;
        detail = media.camera ? 'Your camera is off, so there is no video to send back.' : 'No camera is available, so there is no video to send back.';
      } else if (!state.peerMedia.video) {
        title = peer;
        detail = 'Camera off';
      } else if (!video.videoWidth) {
        title = peer;
        detail = 'Waiting for video…';
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
      flags.append(el('span', { class: 'flag' }, media.mic ? 'You are muted: there is no sound to send back' : 'No microphone is available'));
    }
  } else if (state.phase === 'active') {
    if (!state.peerMedia.audio) flags.append(el('span', { class: 'flag' }, `${peer} is muted`));
    if (state.peerMedia.screen) flags.append(el('span', { class: 'flag' }, `${peer} is sharing their screen`));
  }
}

function renderControls() {
  // Toggle buttons keep their names; aria-pressed (and the crossed-out icon) says whether the toggle is on.
  const mic = $('#mic-button');
  const micOff = !media.mic || !media.micOn;
  mic.setAttribute('aria-pressed', String(micOff));
  mic.title = micOff ? 'Unmute your microphone (M)' : 'Mute your microphone (M)';
  mic.classList.toggle('ctl-off', micOff);

  // In an audio call no video is sent: the camera and the screen have nothing to do.
  const audioCall = !!(state.call && state.call.audioOnly);
  const cam = $('#cam-button');
  const camOff = !media.camera || !media.cameraOn || audioCall;
  cam.setAttribute('aria-pressed', String(camOff));
  cam.title = audioCall ? 'No video in an audio call' : camOff ? 'Turn your camera on (V)' : 'Turn your camera off (V)';
  cam.classList.toggle('ctl-off', camOff);
  cam.disabled = audioCall;
  $('#local-off').hidden = !!media.screen || !camOff;

  const screen = $('#screen-button');
  screen.disabled = audioCall;
  screen.setAttribute('aria-pressed', String(!!media.screen));
  screen.title = media.screen ? 'Stop sharing your screen' : 'Share your screen';
  screen.classList.toggle('ctl-active', !!media.screen);
  screen.hidden = !(navigator.mediaDevices && navigator.mediaDevices.getDisplayMedia);
}

function setConnection(s, retryIn = 0) {
  const box = $('#conn-status');
  box.dataset.state = s;
  const words = {
    online: 'Online',
    connecting: 'Connecting…',
    reconnecting: retryIn >= 1500 ? `Reconnecting in ${Math.round(retryIn / 1000)} s…` : 'Reconnecting…',
    offline: 'Offline',
  };
  $('#conn-text').textContent = words[s] || s;
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
    case 'users': onUsers(msg); break;
    case 'error': onError(msg); break;
  }
});

signaling.addEventListener('state', (ev) => {
  if (document.body.dataset.view !== 'call') return;
  const { state: s, retryIn } = ev.detail;
  setConnection(s, retryIn);
  if (s === 'reconnecting' && retryIn && signaling.attempt === 1) {
    toast('Lost the connection to the server. Reconnecting… Your call, if any, carries on.', { timeout: 5000 });
  }
});

signaling.addEventListener('resumed', (ev) => {
  const reply = ev.detail;
  if (Array.isArray(reply.iceServers)) state.iceServers = reply.iceServers;
  saveSession(reply);
  useEchoName(reply);
  setConnection('online');
  toast('Reconnected to the server.', { timeout: 2500 });
  const call = state.call;
  if (reply.peer) {
    if (call && call.peer === reply.peer) call.signalingResumed();
    else if (!(state.incoming && state.incoming.from === reply.peer)) signaling.send({ type: 'leave', name: reply.peer });
  } else if (state.phase === 'outgoing') {
    endCall(`The call to ${call.peer} was lost while the server was unreachable. Try again.`, 'error');
  } else if (state.phase === 'incoming') {
    const from = state.incoming.from;
    missedCall('missed');
    toast(`Missed call from ${from} while the server was unreachable.`);
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
  const error = reason === 'replaced'
    ? 'You signed in as this name in another tab or window, so this one was signed out.'
    : `While you were disconnected, someone else took the name “${state.name}”. Pick another name.`;
  showLogin({ name: state.name, error });
});

// ---------------------------------------------------------------------------------------------------------------
// Wiring

function wire() {
  $('#login-form').addEventListener('submit', submitLogin);
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
    if (document.visibilityState === 'visible' && state.phase === 'idle' && document.body.dataset.view === 'call') {
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

function boot() {
  wire();
  renderControls();
  const saved = loadSession();
  if (saved) {
    // A reload in the same tab: take the name back with the resume token.
    $('#login-name').value = saved.name;
    document.body.dataset.view = 'login';
    signIn(saved.name, saved.token);
  } else {
    showLogin({ name: params.get('name') || '' });
  }
}

boot();
