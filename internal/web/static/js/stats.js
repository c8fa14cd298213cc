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

// Quality reports: the server is told, in one small optional message (`quality`, docs/protocol.md), how each call
// connected (directly or through the TURN relay, over UDP or TCP), how long connecting took, and the round-trip
// time and packet loss. They are for the operator's metrics; nobody else sees them.

const SAMPLE_EVERY_MS = 5000;

/**
 * Watches a call (call.js) and reports on it: once when its media first connects, and once, with the last figures,
 * when `ended()` is called (before the call is closed). A call that never connected and whose connection failed is
 * reported as failed; one that ended before connecting (declined, cancelled) is not reported at all.
 * @param {import('./call.js').Call} call
 * @param {(msg: object) => boolean} send sends a signaling message
 * @returns {{ended: () => void}}
 */
export function watchQuality(call, send) {
  let connectingAt = 0;
  let iceMs = null;
  let failed = false;
  let last = null; // the last figures read
  let timer = 0;
  let done = false;
  const report = (phase, figures) => {
    const q = { phase, ...figures };
    if (iceMs !== null) q.iceMs = Math.min(300000, Math.round(iceMs));
    send({ type: 'quality', name: call.peer, quality: q });
  };
  const sample = async () => {
    if (done || !call.pc || call.closed) return null;
    try {
      last = qualityFigures(await call.pc.getStats()) || last;
    } catch { /* closed meanwhile */ }
    return last;
  };
  call.addEventListener('state', async (ev) => {
    const state = ev.detail.state;
    if (state === 'connecting' && !connectingAt) connectingAt = performance.now();
    if (state === 'failed' && iceMs === null) failed = true;
    if (state !== 'connected' || iceMs !== null) return;
    iceMs = connectingAt ? performance.now() - connectingAt : null;
    failed = false;
    const figures = await sample();
    if (figures && !done) report('connected', figures);
    timer = setInterval(sample, SAMPLE_EVERY_MS);
  });
  return {
    ended() {
      if (done) return;
      clearInterval(timer);
      done = true;
      if (iceMs !== null && last) report('ended', last);
      else if (failed) report('failed', {});
    },
  };
}

/**
 * The figures of a quality report from an RTCStatsReport: path and transport of the selected candidate pair, its
 * round-trip time, and the share of received packets lost so far; null when no pair is selected yet.
 */
export function qualityFigures(report) {
  const byId = new Map();
  let pairId = '';
  let received = 0;
  let lost = 0;
  report.forEach((s) => {
    byId.set(s.id, s);
    if (s.type === 'transport' && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
    if (s.type === 'candidate-pair' && s.selected) pairId = s.id; // Firefox
    if (s.type === 'inbound-rtp') {
      received += s.packetsReceived || 0;
      lost += Math.max(0, s.packetsLost || 0);
    }
  });
  const pair = byId.get(pairId);
  if (!pair) return null;
  const local = byId.get(pair.localCandidateId) || {};
  const remote = byId.get(pair.remoteCandidateId) || {};
  const relayed = local.candidateType === 'relay' || remote.candidateType === 'relay';
  const figures = { path: relayed ? 'relay' : 'direct' };
  const transport = local.candidateType === 'relay' && local.relayProtocol ? local.relayProtocol : local.protocol;
  if (transport === 'udp' || transport === 'tcp' || transport === 'tls') figures.transport = transport;
  if (typeof pair.currentRoundTripTime === 'number') {
    figures.rttMs = Math.min(60000, Math.round(pair.currentRoundTripTime * 1000));
  }
  if (received + lost > 0) figures.lossPct = Math.round(10000 * lost / (received + lost)) / 100;
  return figures;
}
