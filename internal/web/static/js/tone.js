// Ring tones made with Web Audio, so the page needs no sound files: a ring for an incoming call and a quieter
// ringback while the other side's device rings. A tone is scheduled on the audio clock all at once, for as long as
// it may ring, rather than burst by burst from a timer: a tab in the background has its timers slowed down (to once
// a minute after a while), but its audio plays on.

const PATTERNS = {
  // [frequencies, on ms, off ms, gain]
  ring: [[440, 480], 1600, 2400, 0.12],
  ringback: [[425], 1000, 4000, 0.05],
};

// The longest a tone is scheduled for; a call rings for less (60 s at most by default).
const MAX_SECONDS = 180;

/** Tone plays one repeating pattern at a time. Browsers allow sound only after a user gesture: call unlock() then. */
export class Tone {
  constructor() {
    this.ctx = null;
    this.out = null;
    this.analyser = null;
    this.nodes = [];
    this.playing = '';
  }

  unlock() {
    try {
      if (!this.ctx) {
        this.ctx = new AudioContext();
        this.out = this.ctx.createGain();
        this.out.connect(this.ctx.destination);
        // What the page plays can be measured (level()), so that a test can hear it ring.
        this.analyser = this.ctx.createAnalyser();
        this.analyser.fftSize = 2048;
        this.out.connect(this.analyser);
      }
      if (this.ctx.state === 'suspended') this.ctx.resume().catch(() => {});
    } catch {
      this.ctx = null; // no Web Audio: calls work, silently
    }
  }

  /** Plays the pattern `name` for `seconds` (or until stop()). */
  play(name, seconds = 60) {
    this.stop();
    this.unlock();
    if (!this.ctx) return;
    const [freqs, on, off, gain] = PATTERNS[name];
    const period = (on + off) / 1000;
    const start = this.ctx.currentTime + 0.02;
    const bursts = Math.ceil(Math.min(seconds, MAX_SECONDS) / period);
    for (let i = 0; i < bursts; i++) {
      const t = start + i * period;
      const g = this.ctx.createGain();
      g.gain.setValueAtTime(0, t);
      g.gain.linearRampToValueAtTime(gain, t + 0.03);
      g.gain.setValueAtTime(gain, t + on / 1000 - 0.05);
      g.gain.linearRampToValueAtTime(0, t + on / 1000);
      g.connect(this.out);
      this.nodes.push(g);
      for (const f of freqs) {
        const o = this.ctx.createOscillator();
        o.frequency.value = f;
        o.connect(g);
        o.start(t);
        o.stop(t + on / 1000);
        this.nodes.push(o);
      }
    }
    this.playing = name;
  }

  stop() {
    for (const n of this.nodes) {
      try {
        if (n.stop) n.stop();
        n.disconnect();
      } catch { /* already stopped */ }
    }
    this.nodes = [];
    this.playing = '';
  }

  /** The loudness of what plays now (RMS of the last few milliseconds, 0 when silent). */
  level() {
    if (!this.analyser) return 0;
    const buf = new Float32Array(this.analyser.fftSize);
    this.analyser.getFloatTimeDomainData(buf);
    let sum = 0;
    for (const v of buf) sum += v * v;
    return Math.sqrt(sum / buf.length);
  }
}
