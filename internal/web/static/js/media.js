// Local media: the camera and the microphone, the choice between devices, and screen sharing. The outgoing video
// is whichever of the camera or the screen is live; a Call swaps it into its sender with replaceTrack.

import { t } from './i18n.js';

/**
 * A MediaError says, in words a person understands, why the camera or the microphone is not available. what is
 * the key of the device's name: media.both, media.camera or media.mic.
 */
export function describeMediaError(err, what = 'media.both') {
  const device = t(what);
  switch (err && err.name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return t(window.isSecureContext ? 'media.refused' : 'media.insecure', { what: device });
    case 'NotFoundError':
    case 'OverconstrainedError':
      return t('media.notFound', { what: device });
    case 'NotReadableError':
    case 'AbortError':
      return t('media.inUse', { what: device });
    case 'TypeError':
      if (!navigator.mediaDevices) return t('media.noApi', { what: device });
      break;
  }
  return err && err.message ? t('media.failedBecause', { what: device, message: err.message }) : t('media.failed', { what: device });
}

/**
 * LocalMedia owns the tracks this page sends. Events: "change" (the outgoing tracks or their state changed),
 * "devices" (the device list changed), "screenended" (screen sharing stopped from outside the page).
 */
export class LocalMedia extends EventTarget {
  constructor() {
    super();
    this.camera = null; // MediaStreamTrack
    this.mic = null; // MediaStreamTrack
    this.screen = null; // MediaStreamTrack while sharing
    this.micOn = true;
    this.cameraOn = true;
    this.cameraId = '';
    this.micId = '';
    this.preview = new MediaStream();
    if (navigator.mediaDevices && navigator.mediaDevices.addEventListener) {
      navigator.mediaDevices.addEventListener('devicechange', () => this.dispatchEvent(new Event('devices')));
    }
  }

  /** The video track to send: the screen while sharing, else the camera. */
  get video() { return this.screen || this.camera; }

  get audio() { return this.mic; }

  /**
   * Starts the camera and the microphone. Falls back to whichever works; returns a message for the person when
   * one or both are missing, or '' when everything started.
   */
  async start() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      return describeMediaError(new TypeError('no mediaDevices'));
    }
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: audioConstraints(''), video: videoConstraints('') });
      this.adopt(stream);
      return '';
    } catch (err) {
      // Try each device alone: a missing camera should not cost the microphone.
      const problems = [];
      for (const kind of ['audio', 'video']) {
        try {
          const c = kind === 'audio' ? { audio: audioConstraints('') } : { video: videoConstraints('') };
          this.adopt(await navigator.mediaDevices.getUserMedia(c));
        } catch (e) {
          problems.push([kind, e]);
        }
      }
      if (problems.length === 2) return t('media.canReceive', { problem: describeMediaError(err) });
      const [kind, e] = problems[0];
      return describeMediaError(e, kind === 'audio' ? 'media.mic' : 'media.camera');
    }
  }

  adopt(stream) {
    for (const track of stream.getTracks()) {
      if (track.kind === 'audio') {
        if (this.mic) this.mic.stop();
        this.mic = track;
        this.micId = track.getSettings().deviceId || '';
        track.enabled = this.micOn;
      } else {
        if (this.camera) this.camera.stop();
        this.camera = track;
        this.cameraId = track.getSettings().deviceId || '';
        track.enabled = this.cameraOn;
      }
    }
    this.refreshPreview();
  }

  refreshPreview() {
    for (const t of this.preview.getTracks()) this.preview.removeTrack(t);
    if (this.video) this.preview.addTrack(this.video);
    this.dispatchEvent(new Event('change'));
  }

  setMic(on) {
    this.micOn = on;
    if (this.mic) this.mic.enabled = on;
    this.dispatchEvent(new Event('change'));
  }

  setCamera(on) {
    this.cameraOn = on;
    if (this.camera) this.camera.enabled = on;
    this.dispatchEvent(new Event('change'));
  }

  /** Lists cameras and microphones: {cameras: [{id, label}], mics: [...]}. */
  async devices() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return { cameras: [], mics: [] };
    const all = await navigator.mediaDevices.enumerateDevices();
    // A device the browser gives no name has label '' (the page numbers it).
    const list = (kind) => all.filter((d) => d.kind === kind && d.deviceId).map((d) => ({ id: d.deviceId, label: d.label }));
    return { cameras: list('videoinput'), mics: list('audioinput') };
  }

  /** Switches to another camera or microphone. */
  async useDevice(kind, deviceId) {
    const c = kind === 'audio' ? { audio: audioConstraints(deviceId) } : { video: videoConstraints(deviceId) };
    const stream = await navigator.mediaDevices.getUserMedia(c);
    this.adopt(stream);
  }

  /** Starts sharing the screen; the screen replaces the camera as the outgoing video. */
  async startScreen() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getDisplayMedia) {
      throw new Error(t('screen.unsupported'));
    }
    const stream = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { ideal: 15 } }, audio: false });
    const [track] = stream.getVideoTracks();
    if ('contentHint' in track) track.contentHint = 'detail';
    track.addEventListener('ended', () => {
      if (this.screen === track) {
        this.stopScreen();
        this.dispatchEvent(new Event('screenended'));
      }
    });
    if (this.screen) this.screen.stop();
    this.screen = track;
    this.refreshPreview();
  }

  stopScreen() {
    if (!this.screen) return;
    const track = this.screen;
    this.screen = null;
    track.stop();
    this.refreshPreview();
  }

  /** Stops every device (on sign-out). */
  stop() {
    for (const t of [this.camera, this.mic, this.screen]) if (t) t.stop();
    this.camera = this.mic = this.screen = null;
    this.refreshPreview();
  }
}

function audioConstraints(deviceId) {
  const c = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
  if (deviceId) c.deviceId = { exact: deviceId };
  return c;
}

function videoConstraints(deviceId) {
  const c = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };
  if (deviceId) c.deviceId = { exact: deviceId };
  return c;
}
