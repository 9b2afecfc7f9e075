// The page's own NATS connection: an nkey made in the browser, a user JWT
// for its public key from the API, a WebSocket connection with the official
// client, renewal before expiry, and detection of being signed out.

import { wsconnect, jwtAuthenticator } from "@nats-io/nats-core";
import { createUser, fromSeed } from "@nats-io/nkeys";
import { APIError } from "./api.js";

const enc = new TextEncoder();
const dec = new TextDecoder();

export class SignedOutError extends Error {
  constructor(message) {
    super(message);
    this.name = "SignedOutError";
  }
}

// newSeed makes a fresh user nkey; the seed never leaves the page.
export function newSeed() {
  return createUser().getSeed();
}

// jwtClaims decodes (does not verify) the claims of a JWT: the page only
// needs the subject and expiry to schedule renewal and to check that a
// renewed JWT is for its own key.
export function jwtClaims(jwt) {
  try {
    const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
  } catch {
    return {};
  }
}

// pickWebSocketURL chooses the ws:// or wss:// URL among nats_urls (wss
// first when the page itself is on https). A listener bound to every
// interface is reached on the host the page came from.
export function pickWebSocketURL(urls, loc = window.location) {
  const ws = (urls || []).filter((u) => /^wss?:\/\//i.test(u));
  if (ws.length === 0) return "";
  ws.sort((a, b) => Number(/^wss:/i.test(b)) - Number(/^wss:/i.test(a)));
  const pick = loc.protocol === "https:" ? ws[0] : ws.find((u) => /^ws:/i.test(u)) || ws[0];
  try {
    const u = new URL(pick);
    if (u.hostname === "0.0.0.0" || u.hostname === "[::]" || u.hostname === "::" || u.hostname === "") {
      u.hostname = loc.hostname;
    }
    return u.toString().replace(/\/$/, "");
  } catch {
    return pick;
  }
}

// Chat owns one NATS connection for one signed-in user.
//
// Callbacks: onDelivery(subjectKind, data) for everything on
// chat.user.<uid>.>, onStatus(state, detail) with state "connecting",
// "connected", "reconnecting", "disconnected", onReconnected() after a
// dropped connection is back (the page fills gaps from history), and
// onSignedOut(reason) when the credential was revoked or the session ended.
export class Chat {
  constructor({ api, user, seed, onDelivery, onStatus, onReconnected, onSignedOut }) {
    this.api = api;
    this.user = user;
    this.seed = seed;
    this.keyPair = fromSeed(seed);
    this.publicKey = this.keyPair.getPublicKey();
    this.onDelivery = onDelivery;
    this.onStatus = onStatus;
    this.onReconnected = onReconnected;
    this.onSignedOut = onSignedOut;
    this.jwt = "";
    this.expiresAt = 0;
    this.nc = null;
    this.renewTimer = 0;
    this.stopped = false;
    this.authErrors = 0;
    this.restarts = 0;
    this.checking = null;
  }

  get uid() {
    return this.user.id;
  }

  // start obtains a credential for the page's key and connects.
  async start() {
    const cred = await this.api.issueCredential(this.publicKey);
    this.setCredential(cred);
    const url = pickWebSocketURL(cred.nats_urls);
    if (!url) throw new Error("The server offers no WebSocket URL for chat (nats_urls has no ws:// entry).");
    this.url = url;
    await this.connect();
  }

  async connect() {
    this.onStatus("connecting");
    const nc = await wsconnect({
      servers: [this.url],
      // The session list shows this name, so a person can tell devices apart.
      name: clientName(),
      // The authenticator is asked on every (re)connect, so a renewed JWT is
      // used as soon as it arrives.
      authenticator: jwtAuthenticator(
        () => this.jwt,
        () => this.seed,
      ),
      inboxPrefix: `_INBOX.${this.uid}`,
      maxReconnectAttempts: -1,
      // A server that is down when the page loads is waited for, like a
      // dropped connection.
      waitOnFirstConnect: true,
      reconnectTimeWait: 1000,
      reconnectJitter: 500,
      pingInterval: 20000,
      maxPingOut: 3,
      // The server's advertised cluster URLs are internal addresses.
      ignoreClusterUpdates: true,
    });
    if (this.stopped) {
      // Signed out while waiting for the server.
      nc.close().catch(() => {});
      return;
    }
    this.nc = nc;
    this.onStatus("connected");
    this.sub = this.nc.subscribe(`chat.user.${this.uid}.>`, {
      callback: (err, msg) => {
        if (err) return;
        let data;
        try {
          data = JSON.parse(dec.decode(msg.data));
        } catch {
          return;
        }
        const kind = msg.subject.split(".").slice(3).join(".");
        this.onDelivery(kind, data);
      },
    });
    this.watchStatus(nc);
    nc.closed().then((err) => {
      if (nc === this.nc) this.closed(err);
    });
    clearTimeout(this.restartReset);
    this.restartReset = setTimeout(() => (this.restarts = 0), 60000);
  }

  // info names this connection as the tracker records it, so the session
  // list can mark "this device".
  get clientInfo() {
    const i = this.nc && this.nc.info;
    return i ? { serverID: i.server_id, cid: i.client_id } : null;
  }

  setCredential(cred) {
    const claims = jwtClaims(cred.jwt);
    if (claims.sub && claims.sub !== this.publicKey) {
      // The API renewed a different key (another device issued one since):
      // this JWT is useless with this page's seed.
      return false;
    }
    this.jwt = cred.jwt;
    const exp = cred.expires_at ? Date.parse(cred.expires_at) : claims.exp ? claims.exp * 1000 : 0;
    this.expiresAt = exp || 0;
    this.scheduleRenewal();
    return true;
  }

  // scheduleRenewal renews at 80% of the remaining lifetime (at least 5 s
  // before expiry), retrying on failure.
  scheduleRenewal(retryDelay) {
    clearTimeout(this.renewTimer);
    if (this.stopped || !this.expiresAt) return;
    const left = this.expiresAt - Date.now();
    let delay = retryDelay !== undefined ? retryDelay : Math.max(1000, Math.min(left * 0.8, left - 5000));
    // setTimeout holds at most ~24.8 days.
    delay = Math.min(delay, 2 ** 31 - 1);
    this.renewTimer = setTimeout(() => this.renew(), delay);
  }

  async renew() {
    if (this.stopped) return;
    try {
      const cred = await this.api.renewCredential();
      if (!this.setCredential(cred)) {
        // The account's key is no longer this page's (see checkSignedOut).
        return this.signedOut("You signed in on another device or tab, so this one was signed out.");
      }
    } catch (e) {
      if (e instanceof APIError && e.status === 401) return; // api.onUnauthorized signs out
      if (e instanceof APIError && (e.code === "forbidden" || e.code === "not_found")) {
        // A revoked credential cannot be renewed.
        return this.signedOut("Your chat credential was revoked. You have been signed out.");
      }
      this.scheduleRenewal(10000);
    }
  }

  async watchStatus(nc) {
    for await (const s of nc.status()) {
      if (this.stopped || nc !== this.nc) return;
      switch (s.type) {
        case "disconnect":
          this.onStatus("disconnected");
          break;
        case "reconnecting":
          this.onStatus("reconnecting");
          break;
        case "reconnect":
          this.authErrors = 0;
          this.onStatus("connected");
          this.onReconnected();
          break;
        case "error":
          if (isAuthError(s.error)) {
            this.authErrors++;
            this.checkSignedOut(s.error);
          }
          break;
        default:
      }
    }
  }

  // checkSignedOut asks the API what an authentication error meant. It
  // returns "signed_out" after a revoked or replaced credential (the page
  // is signed out), "renewed" after an expired JWT was renewed, or
  // "unknown".
  async checkSignedOut(err) {
    if (this.stopped) return "signed_out";
    if (this.checking) return this.checking;
    this.checking = (async () => {
      try {
        const me = await this.api.me();
        const nats = (me && (me.nats || (me.user && me.user.nats))) || {};
        const status = nats.status || "";
        const key = nats.public_key || "";
        if (status === "revoked" && (!key || key === this.publicKey)) {
          this.signedOut("Your chat credential was revoked. You have been signed out.");
          return "signed_out";
        }
        if (key !== this.publicKey) {
          // A user holds one chat key at a time: signing in elsewhere
          // replaced (and revoked) this page's key. Asking for it back
          // would sign the other device out in turn.
          this.signedOut("You signed in on another device or tab, so this one was signed out.");
          return "signed_out";
        }
        if (status === "expired" || /expired/i.test(String(err && err.message)) || this.authErrors >= 1) {
          await this.renew();
          return "renewed";
        }
        return "unknown";
      } catch (e) {
        if (e instanceof APIError && e.status === 401) return "signed_out"; // api.onUnauthorized signs out
        if (e instanceof APIError && e.status === 403) {
          this.signedOut("Your chat credential was revoked. You have been signed out.");
          return "signed_out";
        }
        return "unknown";
      }
    })();
    try {
      return await this.checking;
    } finally {
      this.checking = null;
    }
  }

  // closed runs when the client gave up: after repeated authentication
  // errors (a revoked key) or an explicit close.
  async closed(err) {
    if (this.stopped) return;
    this.onStatus("disconnected");
    if (err && isAuthError(err)) {
      const verdict = await this.checkSignedOut(err);
      if (this.stopped || verdict === "signed_out") return;
      if (verdict === "renewed" && this.restarts < 3) {
        this.restarts++;
        try {
          await this.connect();
          this.onReconnected();
          return;
        } catch {
          // fall through to signing out
        }
      }
      return this.signedOut("The chat server refused this device's credential. You have been signed out.");
    }
    this.signedOut("The connection to the chat server was closed. Please log in again.");
  }

  signedOut(reason) {
    if (this.stopped) return;
    this.stop();
    this.onSignedOut(reason);
  }

  // request sends a JSON request and decodes a JSON reply, turning a
  // service error into an Error with a code.
  async request(subject, body, timeout = 5000) {
    if (!this.nc || this.nc.isClosed()) throw codedError("disconnected", "Not connected to the chat server.");
    let msg;
    try {
      msg = await this.nc.request(subject, enc.encode(JSON.stringify(body)), { timeout });
    } catch (e) {
      const name = (e && e.name) || "";
      if (/NoResponders/i.test(name) || /no responders/i.test(String(e && e.message)))
        throw codedError("unavailable", "The chat service is not available right now.");
      if (/Timeout/i.test(name) || /timeout/i.test(String(e && e.message)))
        throw codedError("timeout", "The chat server did not answer in time.");
      if (/Permission/i.test(name)) throw codedError("forbidden", "Not allowed.");
      throw codedError("disconnected", "Not connected to the chat server.");
    }
    const svcErr = msg.headers && msg.headers.get("Nats-Service-Error");
    let data = null;
    if (msg.data && msg.data.length) {
      try {
        data = JSON.parse(dec.decode(msg.data));
      } catch {
        data = null;
      }
    }
    if (data && data.error) {
      const e = typeof data.error === "string" ? { message: data.error } : data.error;
      throw codedError(e.code || "error", e.message || "The server refused the request.");
    }
    if (svcErr) {
      const code = msg.headers.get("Nats-Service-Error-Code");
      throw codedError(code === "429" ? "rate_limited" : "error", svcErr);
    }
    return data;
  }

  // send publishes a message as a request on chat.send.<room>.<uid>; the
  // router answers with the stored sequence number.
  send(roomID, text, clientMsgID) {
    return this.request(`chat.send.${roomID}.${this.uid}`, { text, client_msg_id: clientMsgID });
  }

  // api asks the router on chat.api.<uid>.<op>.
  api2(op, body) {
    return this.request(`chat.api.${this.uid}.${op}`, body || {});
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.renewTimer);
    clearTimeout(this.restartReset);
    if (this.nc && !this.nc.isClosed()) this.nc.close().catch(() => {});
  }
}

// presenceStatuses reads the router's answer to chat.api.<uid>.presence,
// {"members": [{"user_id", "username", "status"}]} with status "online" or
// "offline" (PresenceReply in realtime.go), as [user id, online] pairs;
// anything else gives none.
export function presenceStatuses(res) {
  const members = res && Array.isArray(res.members) ? res.members : [];
  const out = [];
  for (const m of members) {
    if (!m || typeof m.user_id !== "number") continue;
    if (m.status === "online") out.push([m.user_id, true]);
    else if (m.status === "offline") out.push([m.user_id, false]);
  }
  return out;
}

// clientName is "mulchat-web; <browser> on <system>", from the user agent.
export function clientName(ua = typeof navigator === "undefined" ? "" : navigator.userAgent) {
  const browser = [
    [/Edg\//, "Edge"],
    [/Firefox\//, "Firefox"],
    [/Chrome\//, "Chrome"],
    [/Safari\//, "Safari"],
  ].find(([re]) => re.test(ua));
  const system = [
    [/Android/, "Android"],
    [/iPhone|iPad|iPod/, "iOS"],
    [/Mac OS X|Macintosh/, "macOS"],
    [/Windows/, "Windows"],
    [/CrOS/, "ChromeOS"],
    [/Linux/, "Linux"],
  ].find(([re]) => re.test(ua));
  if (!browser && !system) return "mulchat-web";
  return `mulchat-web; ${browser ? browser[1] : "browser"} on ${system ? system[1] : "unknown system"}`;
}

function codedError(code, message) {
  const e = new Error(message);
  e.code = code;
  return e;
}

function isAuthError(err) {
  if (!err) return false;
  const n = String(err.name || "");
  const m = String(err.message || "");
  return /Authorization|Authentication/i.test(n) || /authorization violation|authentication (expired|revoked)|user authentication/i.test(m);
}
