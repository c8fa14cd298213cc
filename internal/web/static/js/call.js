// One call: an RTCPeerConnection with the other person, its chat data channel, and the offer/answer/candidate
// exchange over the signaling connection. The page (app.js) decides when calls start and end; a Call only
// connects, keeps the connection alive (ICE restart) and reports what happens.

import { CandidateQueue, LIMITS, candidateInit, drop } from './limits.js';

const CHAT_LABEL = 'chat';

/**
 * Call events (CustomEvent, data in detail):
 *  - "remotestream": detail.stream, the other person's audio and video;
 *  - "state": detail.state, the RTCPeerConnection's connectionState;
 *  - "chatready": the other side speaks tandem's chat (detail.ready is true) or the channel closed (false);
 *  - "chat": detail.text, a chat message from the other person;
 *  - "peermedia": detail {audio, video, screen}, what the other person sends (tandem peers only);
 *  - "restart": an ICE restart began (detail.attempt);
 *  - "described": a description was applied; whether the call carries video (audioOnly) may have changed.
 */
export class Call extends EventTarget {
  /**
   * @param {object} o
   * @param {string} o.self our name; o.peer the other person's name
   * @param {"caller"|"callee"} o.role who sent the first offer
   * @param {RTCIceServer[]} o.iceServers from the login reply (may be empty)
   * @param {import('./media.js').LocalMedia} o.media the tracks to send
   * @param {(msg: object) => boolean} o.send sends a signaling message
   * @param {boolean} [o.audioOnly] this side wants no video in the call, either way
   */
  constructor({ self, peer, role, iceServers, media, send, audioOnly = false }) {
    super();
    this.wantsAudioOnly = audioOnly;
    this.self = self;
    this.peer = peer;
    this.role = role;
    this.iceServers = iceServers || [];
    this.media = media;
    this.send = send;
    this.pc = null;
    this.dc = null;
    this.chatReady = false;
    // The other side's candidates that came before its description (bounded), and how many were added for the
    // current remote description (bounded too: a new offer or answer starts a new count).
    this.pendingCandidates = new CandidateQueue(peer);
    this.candidatesAdded = 0;
    // A renegotiation offer is applied one at a time; one that comes meanwhile waits, replaced by any later one.
    this.applyingOffer = false;
    this.nextOffer = null;
    this.applyingAnswer = false;
    this.remoteStream = new MediaStream();
    this.closed = false;
    this.restarts = 0;
    this.restartTimer = 0;
    this.connectedOnce = false;
    // In a renegotiation collision, the name that sorts first keeps its offer (as for glare of new calls).
    this.polite = self > peer;
  }

  createPeerConnection() {
    const pc = new RTCPeerConnection({ iceServers: this.iceServers });
    this.pc = pc;
    pc.onicecandidate = (ev) => {
      // Only real candidates: the tutorial's clients cannot parse a null (end-of-candidates) one.
      if (ev.candidate && ev.candidate.candidate) {
        this.send({ type: 'candidate', name: this.peer, candidate: ev.candidate.toJSON() });
      }
    };
    pc.onicecandidateerror = (ev) => {
      console.warn(`tandem: ICE candidate error ${ev.errorCode} ${ev.errorText} (${ev.url || ev.address || ''})`);
    };
    pc.ontrack = (ev) => {
      if (!this.remoteStream.getTracks().includes(ev.track)) this.remoteStream.addTrack(ev.track);
      this.dispatchEvent(new CustomEvent('remotestream', { detail: { stream: this.remoteStream } }));
    };
    pc.onconnectionstatechange = () => this.connectionStateChanged();
    pc.ondatachannel = (ev) => { if (ev.channel.label === CHAT_LABEL) this.useChannel(ev.channel); };
    return pc;
  }

  async addLocalTracks() {
    const streamForIds = new MediaStream();
    if (this.wantsAudioOnly) {
      // No video either way: the caller offers its video line inactive, the callee answers the offer's inactive.
      const video = this.pc.getTransceivers().find((t) => t.receiver.track.kind === 'video' && !t.stopped);
      if (video) {
        await video.sender.replaceTrack(null);
        video.direction = 'inactive';
      } else if (this.role === 'caller') {
        this.pc.addTransceiver('video', { direction: 'inactive' });
      }
    }
    for (const kind of this.wantsAudioOnly ? ['audio'] : ['audio', 'video']) {
      const track = kind === 'audio' ? this.media.audio : this.media.video;
      // A callee reuses the transceivers the offer created; a caller makes them. Either way each kind has one,
      // so the other side's media is received even when this side has no such device.
      const existing = this.pc.getTransceivers().find((t) => t.receiver.track.kind === kind && !t.sender.track &&
        !t.stopped && t.direction !== 'inactive');
      if (track && existing) {
        await existing.sender.replaceTrack(track);
        existing.direction = 'sendrecv';
        if (existing.sender.setStreams) existing.sender.setStreams(streamForIds);
      } else if (track) {
        this.pc.addTrack(track, streamForIds);
      } else if (!existing) {
        this.pc.addTransceiver(kind, { direction: 'recvonly' });
      }
    }
  }

  /** Caller: makes the offer and sends it. */
  async start() {
    this.createPeerConnection();
    await this.addLocalTracks();
    this.useChannel(this.pc.createDataChannel(CHAT_LABEL, { ordered: true }));
    const offer = await this.pc.createOffer();
    await this.pc.setLocalDescription(offer);
    this.sendDescription('offer');
  }

  /** Callee: answers the offer that started the call; earlyCandidates are those that came while it rang. */
  async answer(offer, earlyCandidates = []) {
    this.createPeerConnection();
    for (const c of earlyCandidates) this.pendingCandidates.push(c);
    await this.setRemote(offer);
    await this.addLocalTracks();
    const answer = await this.pc.createAnswer();
    await this.pc.setLocalDescription(answer);
    this.sendDescription('answer');
    await this.flushCandidates();
  }

  /** The other side's answer to our offer (the first one or an ICE restart). */
  async handleAnswer(answer) {
    // Answers that come while one is being applied are extra (only one answers our offer): they are not queued.
    if (!this.pc || this.applyingAnswer || this.pc.signalingState !== 'have-local-offer') return;
    this.applyingAnswer = true;
    try {
      await this.setRemote(answer);
    } finally {
      this.applyingAnswer = false;
    }
    await this.flushCandidates();
  }

  /**
   * A new offer from the other side during the call: an ICE restart or another renegotiation. Offers are applied
   * one at a time; of those that come meanwhile only the latest is kept, and applied next.
   */
  async handleOffer(offer) {
    if (!this.pc) return;
    if (this.applyingOffer) {
      this.nextOffer = offer;
      return;
    }
    this.applyingOffer = true;
    try {
      for (let next = offer; next && !this.closed; next = this.nextOffer) {
        this.nextOffer = null;
        try {
          await this.applyOffer(next);
        } catch (err) {
          if (!this.nextOffer) throw err;
          console.warn('tandem: renegotiation failed:', err);
        }
      }
    } finally {
      this.applyingOffer = false;
      this.nextOffer = null;
    }
  }

  async applyOffer(offer) {
    const collision = this.pc.signalingState !== 'stable';
    if (collision && !this.polite) return; // ours wins; they will answer it
    await this.setRemote(offer); // rolls our own offer back when polite
    const answer = await this.pc.createAnswer();
    await this.pc.setLocalDescription(answer);
    this.sendDescription('answer');
    await this.flushCandidates();
  }

  async setRemote(description) {
    await this.pc.setRemoteDescription(description);
    this.candidatesAdded = 0;
    this.dispatchEvent(new CustomEvent('described'));
  }

  /**
   * Whether the call carries no video, either way: this side asked for an audio call, or the other side did (its
   * description has no video, or the video was negotiated inactive).
   */
  get audioOnly() {
    if (this.wantsAudioOnly) return true;
    if (!this.pc || !this.pc.remoteDescription) return false;
    if (!sdpHasVideo(this.pc.remoteDescription.sdp)) return true;
    const video = this.pc.getTransceivers().find((t) => t.receiver.track.kind === 'video' && !t.stopped);
    return !video || video.currentDirection === 'inactive';
  }

  /** A candidate from the other side: held until its description is set, then added, within the bounds. */
  async handleCandidate(candidate) {
    if (!this.pc || !this.pc.remoteDescription) {
      this.pendingCandidates.push(candidate);
      return;
    }
    const c = candidateInit(candidate);
    if (!c) return;
    if (c.size > LIMITS.candidateBytes) {
      drop('candidates', `a candidate from ${this.peer}: ${c.size} characters, more than ${LIMITS.candidateBytes}`, c.size);
      return;
    }
    await this.addCandidate(c.init);
  }

  async flushCandidates() {
    for (const c of this.pendingCandidates.take()) await this.addCandidate(c);
  }

  async addCandidate(candidate) {
    if (this.candidatesAdded >= LIMITS.candidatesPerCall) {
      drop('candidates', `a candidate from ${this.peer}: ${this.candidatesAdded} already added for this description`);
      return;
    }
    this.candidatesAdded++;
    try {
      await this.pc.addIceCandidate(candidate);
    } catch (err) {
      // Candidates of an offer that lost a collision, or of an older ICE generation, are expected to fail.
      console.debug('tandem: candidate not added:', err.message);
    }
  }

  sendDescription(kind) {
    const d = this.pc.localDescription;
    this.send({ type: kind, name: this.peer, [kind]: { type: d.type, sdp: d.sdp } });
  }

  connectionStateChanged() {
    const state = this.pc.connectionState;
    this.dispatchEvent(new CustomEvent('state', { detail: { state } }));
    clearTimeout(this.restartTimer);
    if (state === 'connected') {
      this.connectedOnce = true;
      this.restarts = 0;
    } else if (state === 'failed') {
      // The caller restarts at once; the callee gives it a moment, so the two rarely collide, and steps in when the
      // caller cannot (a tutorial client never restarts).
      this.scheduleRestart(this.role === 'caller' ? 0 : 4000);
    } else if (state === 'disconnected') {
      // Often a blip that heals by itself; restart if it does not.
      this.scheduleRestart(this.role === 'caller' ? 5000 : 9000);
    }
  }

  scheduleRestart(delay) {
    clearTimeout(this.restartTimer);
    this.restartTimer = setTimeout(() => this.restartIce(), delay);
  }

  /** Starts an ICE restart: a new offer with fresh ICE credentials, sent as a renegotiation of the same call. */
  async restartIce() {
    if (this.closed || !this.pc || this.pc.signalingState !== 'stable') return;
    const state = this.pc.connectionState;
    if (state === 'connected' || state === 'new' || state === 'closed') return;
    this.restarts++;
    this.dispatchEvent(new CustomEvent('restart', { detail: { attempt: this.restarts } }));
    await this.renegotiate({ iceRestart: true });
    // If this attempt goes nowhere (say the offer was lost while the server was unreachable), try again.
    this.scheduleRestart(Math.min(30000, 8000 * this.restarts));
  }

  /** Sends a new offer in the same call: the server relays it as a renegotiation, and either kind of client answers. */
  async renegotiate(options = {}) {
    if (this.closed || !this.pc || this.pc.signalingState !== 'stable') return;
    try {
      const offer = await this.pc.createOffer(options);
      await this.pc.setLocalDescription(offer);
      this.sendDescription('offer');
    } catch (err) {
      console.warn('tandem: renegotiation failed:', err);
    }
  }

  /** Takes back an offer the server refused to deliver, so that the other side's next offer is answered. */
  async rollback() {
    if (this.pc && !this.closed && this.pc.signalingState === 'have-local-offer') {
      await this.pc.setLocalDescription({ type: 'rollback' });
    }
  }

  /**
   * Called when the server no longer knows about this call (it restarted while media kept flowing peer to peer):
   * a new offer makes the two of us peers on the server again, so that hanging up and ICE restarts reach the other
   * side. Both sides do it; an offer that meets the other's is settled as any collision.
   */
  async rejoin() {
    const state = this.pc ? this.pc.connectionState : 'closed';
    await this.renegotiate(state === 'failed' || state === 'disconnected' ? { iceRestart: true } : {});
  }

  /** Called after the signaling connection came back: resume a restart that may have been lost on the way. */
  signalingResumed() {
    if (!this.pc || this.closed) return;
    const state = this.pc.connectionState;
    if (state === 'failed' || state === 'disconnected') {
      if (this.pc.signalingState === 'have-local-offer') {
        // Our restart offer may never have arrived: send it again.
        this.sendDescription('offer');
      } else {
        this.scheduleRestart(this.role === 'caller' ? 0 : 2000);
      }
    }
  }

  /** Replaces the outgoing track of a kind (camera ↔ screen, another device) without renegotiation. */
  async replaceTrack(kind, track) {
    if (!this.pc || (kind === 'video' && this.audioOnly)) return;
    const t = this.pc.getTransceivers().find((x) => x.receiver.track.kind === kind && !x.stopped);
    if (!t) return;
    await t.sender.replaceTrack(track || null);
    if (track && (t.direction === 'recvonly' || t.direction === 'inactive')) {
      // The first track of a kind the call started without (a device plugged in during the call) needs an offer.
      t.direction = 'sendrecv';
      await this.renegotiate();
    }
    this.sendMediaState();
  }

  useChannel(dc) {
    this.dc = dc;
    dc.onopen = () => {
      this.dcSend({ t: 'hello', app: 'tandem', v: 1 });
      this.sendMediaState();
    };
    dc.onclose = () => {
      if (this.chatReady) {
        this.chatReady = false;
        this.dispatchEvent(new CustomEvent('chatready', { detail: { ready: false } }));
      }
    };
    dc.onmessage = (ev) => this.channelMessage(ev.data);
  }

  channelMessage(data) {
    if (typeof data !== 'string' || data.length > LIMITS.channelMessageChars) {
      drop('channelMessages', `a data-channel message from ${this.peer} (${typeof data === 'string' ? `${data.length} characters` : 'binary'})`);
      return;
    }
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    switch (msg && msg.t) {
      case 'hello':
        if (!this.chatReady) {
          this.chatReady = true;
          this.dispatchEvent(new CustomEvent('chatready', { detail: { ready: true } }));
        }
        break;
      case 'chat':
        if (typeof msg.text === 'string' && msg.text) {
          this.dispatchEvent(new CustomEvent('chat', { detail: { text: msg.text.slice(0, LIMITS.chatChars) } }));
        }
        break;
      case 'media':
        this.dispatchEvent(new CustomEvent('peermedia', {
          detail: { audio: msg.audio !== false, video: msg.video !== false, screen: !!msg.screen },
        }));
        break;
    }
  }

  dcSend(obj) {
    if (!this.dc || this.dc.readyState !== 'open') return false;
    this.dc.send(JSON.stringify(obj));
    return true;
  }

  /** Sends a chat message; false when chat is not available. */
  sendChat(text) {
    return this.chatReady && this.dcSend({ t: 'chat', text });
  }

  /** Tells a tandem peer what we send, so it can show "muted" or "camera off" rather than silence or black. */
  sendMediaState() {
    this.dcSend({
      t: 'media',
      audio: !!(this.media.audio && this.media.micOn),
      video: !this.audioOnly && !!(this.media.screen || (this.media.camera && this.media.cameraOn)),
      screen: !!this.media.screen,
    });
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.restartTimer);
    if (this.dc) {
      this.dc.onclose = null;
      this.dc.close();
    }
    if (this.pc) {
      this.pc.onconnectionstatechange = null;
      this.pc.close();
    }
  }
}

/**
 * Whether a session description offers or answers video that can flow one way or the other: a video media section
 * with a port, not marked inactive. An audio call's description has none.
 */
export function sdpHasVideo(sdp) {
  for (const section of String(sdp || '').split(/\r?\nm=/).slice(1)) {
    if (!/^video [1-9]/.test(section)) continue;
    if (!/^a=inactive\s*$/m.test(section)) return true;
  }
  return false;
}
