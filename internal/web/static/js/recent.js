// Recent calls, kept on this device (localStorage) and nowhere else: who, which way, how it ended, when and for how
// long. Each name that signs in on the device has its own list, under its own key (so that two tabs signed in
// under two names never write over each other's calls); a list holds at most LIMITS.recentCalls calls, and the
// device keeps the lists of at most LIMITS.recentNames names (the least recently used go). What is in storage is
// read defensively: only well-formed entries are taken, never more than the bound.

import { LIMITS } from './limits.js';

const PREFIX = 'tandem.recent.';

/**
 * How a call ended, as recorded:
 *   answered     the call was connected (dur is how long it lasted, in ms)
 *   missed       a call to us that rang and was not answered (the caller gave up, or it timed out)
 *   missed_busy  a call to us that came while we were in another call, so it never rang
 *   declined     refused (by us when dir is "in", by them when "out")
 *   no_answer    we called and nobody answered
 *   busy         we called and they were in another call
 *   not_online   we called and they were not online
 *   cancelled    we called and hung up before an answer
 *   failed       the call could not be set up, or was lost before it connected
 */
export const OUTCOMES = Object.freeze(['answered', 'missed', 'missed_busy', 'declined', 'no_answer', 'busy',
  'not_online', 'cancelled', 'failed']);

/** Whether an entry is a call to us that we did not get to answer. */
export function isMissed(entry) {
  return entry.dir === 'in' && (entry.outcome === 'missed' || entry.outcome === 'missed_busy');
}

function valid(e) {
  return e && typeof e === 'object' && typeof e.peer === 'string' && e.peer.length > 0 && e.peer.length <= 256 &&
    (e.dir === 'in' || e.dir === 'out') && OUTCOMES.includes(e.outcome) && Number.isFinite(e.at) &&
    (e.dur === undefined || (Number.isFinite(e.dur) && e.dur >= 0));
}

function storage() {
  try {
    return window.localStorage;
  } catch {
    return null; // storage refused: recent calls last as long as the page
  }
}

/** RecentCalls is the list of one name on this device, newest first. */
export class RecentCalls {
  constructor() {
    this.me = '';
    this.entries = [];
  }

  /** Reads the list of `me` from storage. */
  load(me = this.me) {
    this.me = me;
    this.entries = [];
    const store = storage();
    if (!me || !store) return;
    let list = [];
    try {
      const parsed = JSON.parse(store.getItem(PREFIX + me) || '[]');
      if (Array.isArray(parsed)) list = parsed;
    } catch { /* not ours, or damaged: start afresh */ }
    this.entries = list.slice(0, LIMITS.recentCalls * 4).filter(valid).slice(0, LIMITS.recentCalls).map((e) => ({
      peer: e.peer, dir: e.dir, outcome: e.outcome, at: e.at, dur: e.dur, audio: !!e.audio, seen: !!e.seen,
    }));
  }

  save() {
    const store = storage();
    if (!this.me || !store) return;
    try {
      store.setItem(PREFIX + this.me, JSON.stringify(this.entries));
    } catch {
      return; // full or refused: the list in memory still serves this page
    }
    this.forgetOtherNames(store);
  }

  /** Keeps the lists of the LIMITS.recentNames most recently used names of this device; the others go. */
  forgetOtherNames(store) {
    const lists = [];
    for (let i = 0; i < store.length; i++) {
      const key = store.key(i);
      if (!key || !key.startsWith(PREFIX) || key === PREFIX + this.me) continue;
      let newest = 0;
      try {
        const list = JSON.parse(store.getItem(key));
        if (Array.isArray(list) && list[0] && Number.isFinite(list[0].at)) newest = list[0].at;
      } catch { /* damaged: first to go */ }
      lists.push({ key, newest });
    }
    lists.sort((a, b) => b.newest - a.newest);
    for (const { key } of lists.slice(LIMITS.recentNames - 1)) store.removeItem(key);
  }

  /** Adds a call, newest first, dropping the oldest past the bound, and saves the list. */
  add(entry) {
    const e = {
      peer: entry.peer, dir: entry.dir, outcome: entry.outcome, at: entry.at || Date.now(), dur: entry.dur,
      audio: !!entry.audio, seen: false,
    };
    if (!valid(e)) return;
    this.entries.unshift(e);
    this.entries.length = Math.min(this.entries.length, LIMITS.recentCalls);
    this.save();
  }

  /** How many calls were missed and not yet seen in the list. */
  unseenMissed() {
    return this.entries.filter((e) => isMissed(e) && !e.seen).length;
  }

  /** Marks the calls as seen in the list. */
  markSeen() {
    if (!this.entries.some((e) => !e.seen)) return;
    for (const e of this.entries) e.seen = true;
    this.save();
  }
}
