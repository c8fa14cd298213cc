// A small live quality readout from RTCPeerConnection.getStats: round-trip time, bitrate each way and packet loss,
// computed from the difference between two samples.

/** StatsMeter samples a peer connection; each sample() returns the readout since the previous one. */
export class StatsMeter {
  constructor(pc) {
    this.pc = pc;
    this.prev = null;
  }

  /**
   * Returns {rttMs, inKbps, outKbps, lossPct, width, height, fps}; fields are null when not known yet.
   */
  async sample() {
    const report = await this.pc.getStats();
    const now = {
      at: performance.now(),
      bytesIn: 0,
      bytesOut: 0,
      received: 0,
      lost: 0,
      rttMs: null,
      width: null,
      height: null,
      fps: null,
    };
    let pairId = '';
    const pairs = new Map();
    report.forEach((s) => {
      switch (s.type) {
        case 'inbound-rtp':
          now.bytesIn += s.bytesReceived || 0;
          now.received += s.packetsReceived || 0;
          now.lost += Math.max(0, s.packetsLost || 0);
          if (s.kind === 'video') {
            now.width = s.frameWidth || null;
            now.height = s.frameHeight || null;
            now.fps = s.framesPerSecond || null;
          }
          break;
        case 'outbound-rtp':
          now.bytesOut += s.bytesSent || 0;
          break;
        case 'transport':
          if (s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
          break;
        case 'candidate-pair':
          pairs.set(s.id, s);
          break;
      }
    });
    let pair = pairs.get(pairId);
    if (!pair) pair = [...pairs.values()].find((p) => p.nominated && p.state === 'succeeded');
    if (pair && typeof pair.currentRoundTripTime === 'number') now.rttMs = Math.round(pair.currentRoundTripTime * 1000);

    const prev = this.prev;
    this.prev = now;
    const out = { rttMs: now.rttMs, inKbps: null, outKbps: null, lossPct: null, width: now.width, height: now.height, fps: now.fps };
    if (prev) {
      const secs = (now.at - prev.at) / 1000;
      if (secs > 0) {
        out.inKbps = Math.max(0, (now.bytesIn - prev.bytesIn) * 8 / 1000 / secs);
        out.outKbps = Math.max(0, (now.bytesOut - prev.bytesOut) * 8 / 1000 / secs);
      }
      const got = now.received - prev.received;
      const lost = now.lost - prev.lost;
      if (got + lost > 0) out.lossPct = Math.max(0, 100 * lost / (got + lost));
    }
    return out;
  }
}
