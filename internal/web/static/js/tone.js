// Ring tones made with Web Audio, so the page needs no sound files: a ring for an incoming call and a quieter
// ringback while the other side's device rings.

const PATTERNS = {
  // [frequencies, on ms, off ms, gain]
  ring: [[440, 480], 1600, 2400, 0.12],
  ringback: [[425], 1000, 4000, 0.05],
};

/** Tone plays one repeating pattern at a time. Browsers allow sound only after a user gesture: call unlock() then. */
export class Tone {
  constructor() {
    this.ctx = null;
    this.timer = 0;
    this.nodes = [];
  }

  unlock() {
    try {
      this.ctx = this.ctx || new AudioContext();
      if (this.ctx.state === 'suspended') this.ctx.resume();
    } catch {
      this.ctx = null; // no Web Audio: calls work, silently
    }
  }

  play(name) {
    this.stop();
    if (!this.ctx) this.unlock();
    if (!this.ctx) return;
    const [freqs, on, off, gain] = PATTERNS[name];
    const burst = () => {
      const t = this.ctx.currentTime;
      const g = this.ctx.createGain();
      g.gain.setValueAtTime(0, t);
      g.gain.linearRampToValueAtTime(gain, t + 0.03);
      g.gain.setValueAtTime(gain, t + on / 1000 - 0.05);
      g.gain.linearRampToValueAtTime(0, t + on / 1000);
      g.connect(this.ctx.destination);
      for (const f of freqs) {
        const o = this.ctx.createOscillator();
        o.frequency.value = f;
        o.connect(g);
        o.start(t);
        o.stop(t + on / 1000);
        this.nodes.push(o);
      }
      this.nodes.push(g);
    };
    burst();
    this.timer = setInterval(burst, on + off);
  }

  stop() {
    clearInterval(this.timer);
    this.timer = 0;
    for (const n of this.nodes) {
      try {
        if (n.stop) n.stop();
        n.disconnect();
      } catch { /* already stopped */ }
    }
    this.nodes = [];
  }
}
