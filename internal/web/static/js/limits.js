// What the page keeps of what the server and the other person send it. Every buffer that holds something a stranger
// sent has a bound here; what goes over it is dropped, counted in `dropped` (window.tandem.dropped) and said in the
// console at debug level. docs/limits.md ("The web client") lists them.

export const LIMITS = Object.freeze({
  // ICE candidates held for one call before they can be given to the peer connection (while it rings, or until
  // the answer comes), and added to it for one remote description (a new offer or answer starts a new count). A
  // browser trickles tens of candidates.
  candidatesPerCall: 100,
  // Their total size (candidate line, sdpMid and usernameFragment, in characters).
  candidateBytesPerCall: 64 * 1024,
  // One candidate: a real one is well under 1 KB. A larger one is dropped on arrival.
  candidateBytes: 2048,
  // Messages kept in the chat log of a call (the oldest go first), and characters shown of one message.
  chatMessages: 200,
  chatChars: 4000,
  // A data-channel message larger than this (characters) is dropped unread: a chat message of chatChars characters
  // fits in its JSON many times over.
  channelMessageChars: 32 * 1024,
  // People shown from one `users` reply.
  users: 100,
  // Lines of window.tandem.history, and characters of each.
  historyLines: 200,
  historyLineChars: 300,
  // Notices on screen at once, and characters of each.
  toasts: 4,
  toastChars: 400,
  // Recent calls kept on the device (localStorage) for one name, and the names whose lists the device keeps.
  recentCalls: 50,
  recentNames: 10,
  // Names of people who called while this page was in another call, kept to tell after that call.
  missedWhileBusy: 20,
});

/** How much the page dropped since it was opened, by kind. */
export const dropped = { candidates: 0, candidateBytes: 0, channelMessages: 0 };

/**
 * Counts a drop of `kind` and says why in the console at debug level: the first one, then every hundredth, so that
 * a flood does not fill the console instead.
 */
export function drop(kind, why, size = 0) {
  dropped[kind] = (dropped[kind] || 0) + 1;
  if (kind === 'candidates') dropped.candidateBytes += size;
  const n = dropped[kind];
  if (n === 1 || n % 100 === 0) console.debug(`tandem: dropped ${why} (${n} ${kind} dropped so far)`);
}

/**
 * Returns the RTCIceCandidateInit of a candidate from the other side (only its known fields, so nothing else it
 * carried is kept) with its size, or null when it is not a candidate. An end-of-candidates null is not one.
 */
export function candidateInit(c) {
  if (!c || typeof c !== 'object' || typeof c.candidate !== 'string' || !c.candidate) return null;
  const init = { candidate: c.candidate };
  let size = c.candidate.length;
  if (typeof c.sdpMid === 'string') {
    init.sdpMid = c.sdpMid;
    size += c.sdpMid.length;
  }
  if (Number.isInteger(c.sdpMLineIndex)) init.sdpMLineIndex = c.sdpMLineIndex;
  if (typeof c.usernameFragment === 'string') {
    init.usernameFragment = c.usernameFragment;
    size += c.usernameFragment.length;
  }
  return { init, size };
}

/**
 * CandidateQueue holds the candidates of one call until they can be used, at most LIMITS.candidatesPerCall of them
 * and LIMITS.candidateBytesPerCall in all. `who` names the other side in the console.
 */
export class CandidateQueue {
  constructor(who) {
    this.who = who;
    this.items = [];
    this.bytes = 0;
  }

  get length() { return this.items.length; }

  /** Adds a candidate (as it came); returns false when it was dropped (or was not a candidate). */
  push(candidate) {
    const c = candidateInit(candidate);
    if (!c) return false;
    if (c.size > LIMITS.candidateBytes) {
      drop('candidates', `a candidate from ${this.who}: ${c.size} characters, more than ${LIMITS.candidateBytes}`, c.size);
      return false;
    }
    if (this.items.length >= LIMITS.candidatesPerCall || this.bytes + c.size > LIMITS.candidateBytesPerCall) {
      drop('candidates', `a candidate from ${this.who}: already ${this.items.length} (${this.bytes} characters) held for the call`, c.size);
      return false;
    }
    this.items.push(c.init);
    this.bytes += c.size;
    return true;
  }

  /** Takes every candidate out, oldest first. */
  take() {
    const items = this.items;
    this.items = [];
    this.bytes = 0;
    return items;
  }
}
