// The signaling connection: one WebSocket to the tandem server that served this page, speaking the JSON protocol of
// docs/protocol.md. It logs in, reconnects by itself with backoff after a network blip or a server restart, and
// logs back in under the same name with the resume token. A server that is being restarted and says so (1012, a
// node of a cluster draining) is left at once, without backoff: another node takes the session over.

const CLOSE_REPLACED = 4000;
const CLOSE_SERVICE_RESTART = 1012;
// How long at most a client told 1012 waits before reconnecting: the server already spreads its clients' closes
// over a few seconds; this only keeps those closed together from arriving together.
const RESTART_JITTER_MS = 300;

/** The WebSocket URL of the server that served this page: same host and port, wss when the page is https. */
export function serverURL(loc = window.location) {
  const scheme = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${loc.host}/ws`;
}

/**
 * A LoginError is a refused login: code is the protocol's code (name_taken, invalid_name, unauthorized, expired,
 * ...), "unreachable" or "bad_address"; message is the server's (in English) or the cause's; retryAfter, in
 * seconds, when the server says when to try again; sent names the credential the login carried (password,
 * invite, jwt, device, or ''). The page puts it in words of its language.
 */
export class LoginError extends Error {
  constructor(code, message, retryAfter = 0, sent = '') {
    super(message);
    this.name = 'LoginError';
    this.code = code;
    this.retryAfter = retryAfter;
    this.sent = sent;
  }
}

/** The login fields that carry credentials (docs/access.md), in the order they are tried. */
const CREDENTIALS = ['invite', 'jwt', 'password', 'device'];

/** Codes of a refused reconnect that are worth trying again later rather than giving up. */
const TRANSIENT = new Set(['rate_limited', 'server_busy']);

/**
 * Signaling is the client side of the protocol. Events (CustomEvent, data in detail):
 *  - "message": a message from the server other than a login reply;
 *  - "state": "online" | "connecting" | "reconnecting" | "offline" (detail.state, detail.retryIn in ms);
 *  - "resumed": logged back in after a reconnect (detail is the login reply);
 *  - "lost": the session is gone for good (detail.reason: "replaced", or the code of the refused login:
 *    "name_taken", "invalid_name", "unauthorized", "expired"...; detail.sent: the credential it carried).
 */
export class Signaling extends EventTarget {
  constructor(url = serverURL(), { backoffMin = 500, backoffMax = 15000 } = {}) {
    super();
    this.url = url;
    this.backoffMin = backoffMin;
    this.backoffMax = backoffMax;
    this.ws = null;
    this.name = '';
    this.token = '';
    this.state = 'offline';
    this.attempt = 0;
    this.retryTimer = 0;
    this.pendingLogin = null; // {resolve, reject} of the login in flight
    this.credentials = {}; // what the next login carries besides the name and token (login())
    this.sent = ''; // the credential the last login carried
    this.wanted = false; // whether we want to stay connected
    // When the device gets its network back, do not wait out the backoff.
    this.onOnline = () => { if (this.wanted && this.state === 'reconnecting') this.reconnectNow(); };
    window.addEventListener('online', this.onOnline);
  }

  /**
   * Connects (if needed) and logs in. Resolves with the server's login reply; rejects with a LoginError.
   * A token, when given, resumes the session that holds the name. credentials holds what a server with an access
   * mode needs ({password, invite, jwt, device}); they are kept in memory only, and once in, only the device
   * credential (or a token from the app) is kept, for reconnects. An empty name is left out (the credential
   * names the user).
   */
  login(name, token = '', credentials = {}) {
    this.name = name;
    this.token = token;
    this.credentials = { ...credentials };
    this.wanted = true;
    if (this.pendingLogin) this.pendingLogin.reject(new LoginError('superseded', 'Another sign-in started.'));
    return new Promise((resolve, reject) => {
      this.pendingLogin = { resolve, reject, first: true };
      if (this.ws && this.ws.readyState === WebSocket.OPEN) {
        this.sendLogin();
      } else if (!this.ws || this.ws.readyState !== WebSocket.CONNECTING) {
        this.open();
      }
    });
  }

  /** Sends a message; returns false when there is no open connection (the message is dropped). */
  send(msg) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN || this.state !== 'online') return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  /** Closes the connection for good and forgets the session. */
  close() {
    this.wanted = false;
    clearTimeout(this.retryTimer);
    this.pendingLogin = null;
    if (this.ws) {
      this.ws.onclose = null;
      this.ws.close(1000);
      this.ws = null;
    }
    this.setState('offline');
  }

  open() {
    clearTimeout(this.retryTimer);
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (err) {
      this.failLogin(new LoginError('bad_address', err.message));
      return;
    }
    this.ws = ws;
    if (this.state !== 'reconnecting') this.setState('connecting');
    ws.onopen = () => this.sendLogin();
    ws.onmessage = (ev) => this.receive(ev.data);
    ws.onclose = (ev) => this.closed(ws, ev);
  }

  sendLogin() {
    // missed: tell this page who called while it was in a call (answered busy), as `missed` messages.
    const msg = { type: 'login', missed: true };
    if (this.name) msg.name = this.name;
    if (this.token) msg.token = this.token;
    for (const k of CREDENTIALS) if (this.credentials && this.credentials[k]) msg[k] = this.credentials[k];
    this.sent = CREDENTIALS.find((k) => msg[k] && (k !== 'device' || !msg.password)) || '';
    this.ws.send(JSON.stringify(msg));
  }

  /** Replaces the credentials used for the next reconnects (a new token from the app, say). */
  setCredentials(credentials) {
    this.credentials = { ...credentials };
  }

  receive(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return; // not ours to understand
    }
    if (!msg || typeof msg !== 'object' || typeof msg.type !== 'string') return;
    if (msg.type === 'login') {
      this.loginReply(msg);
      return;
    }
    this.dispatchEvent(new CustomEvent('message', { detail: msg }));
  }

  loginReply(msg) {
    const pending = this.pendingLogin;
    this.pendingLogin = null;
    if (msg.success) {
      this.name = msg.name || this.name;
      this.token = msg.token || '';
      // Keep no password, and no invite (it is used up): the device credential brings this device back.
      const c = this.credentials || {};
      this.credentials = msg.device ? { device: msg.device } : c.jwt ? { jwt: c.jwt } : c.device ? { device: c.device } : {};
      this.attempt = 0;
      this.setState('online');
      if (pending) pending.resolve(msg);
      else this.dispatchEvent(new CustomEvent('resumed', { detail: msg }));
      return;
    }
    const retryAfter = Number.isInteger(msg.retryAfter) ? msg.retryAfter : 0;
    const err = new LoginError(msg.code || 'refused', typeof msg.message === 'string' ? msg.message : '', retryAfter, this.sent);
    if (pending && pending.first) {
      // A sign-in the user asked for: they get to fix the name and try again on a new connection.
      this.token = '';
      this.close();
      pending.reject(err);
      return;
    }
    if (TRANSIENT.has(err.code) && this.wanted) {
      // The server is busy or slowing logins from this address down: try again when it says.
      if (this.ws) {
        this.ws.onclose = null;
        this.ws.close(1000);
        this.ws = null;
      }
      this.scheduleReconnect(Math.max(1000, retryAfter * 1000));
      return;
    }
    // A reconnect could not take the name back (someone else has it now), or its credential is no longer good.
    this.wanted = false;
    this.dispatchEvent(new CustomEvent('lost', { detail: { reason: err.code, message: err.message, sent: err.sent } }));
    this.close();
  }

  closed(ws, ev) {
    if (ws !== this.ws) return;
    this.ws = null;
    if (ev.code === CLOSE_REPLACED) {
      this.wanted = false;
      this.setState('offline');
      this.dispatchEvent(new CustomEvent('lost', { detail: { reason: 'replaced' } }));
      return;
    }
    const pending = this.pendingLogin;
    if (pending && pending.first) {
      // The user is waiting on the login page: tell them now rather than retry behind their back.
      this.pendingLogin = null;
      this.wanted = false;
      this.setState('offline');
      pending.reject(new LoginError('unreachable', `cannot reach ${window.location.host}`));
      return;
    }
    if (!this.wanted) {
      this.setState('offline');
      return;
    }
    if (ev.code === CLOSE_SERVICE_RESTART) {
      // Moved, not lost: reconnect now (the load balancer picks a node that is not restarting) and resume with
      // the token; a call goes on meanwhile, its media being peer to peer. Should that fail, backoff as usual.
      this.attempt = 0;
      this.scheduleReconnect(Math.round(Math.random() * RESTART_JITTER_MS));
      return;
    }
    this.scheduleReconnect();
  }

  /** Reconnects after delay ms, or after the backoff of this attempt when delay is not given. */
  scheduleReconnect(delay) {
    const prompt = delay !== undefined;
    if (!prompt) {
      const base = Math.min(this.backoffMax, this.backoffMin * 2 ** this.attempt);
      delay = Math.round(base * (0.7 + Math.random() * 0.6));
    }
    this.attempt++;
    // A prompt reconnect reports no wait: the page need not announce a lost connection for it.
    this.setState('reconnecting', prompt ? 0 : delay);
    this.pendingLogin = null;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.open(), delay);
  }

  reconnectNow() {
    clearTimeout(this.retryTimer);
    this.attempt = 0;
    this.open();
  }

  failLogin(err) {
    const pending = this.pendingLogin;
    this.pendingLogin = null;
    if (pending) pending.reject(err);
    if (this.wanted && !pending) this.scheduleReconnect();
  }

  setState(state, retryIn = 0) {
    if (this.state === state && !retryIn) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent('state', { detail: { state, retryIn } }));
  }
}
