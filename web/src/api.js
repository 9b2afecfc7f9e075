// The HTTP JSON API client (/api/v1, same origin, bearer token).

export class APIError extends Error {
  // status is the HTTP status (0 when the server could not be reached), code
  // mulchat's error code ("unauthorized", "rate_limited", ...).
  constructor(status, code, message, retryAfter) {
    super(message);
    this.name = "APIError";
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

// friendlyError turns an error into a sentence for a person, by code, keeping
// the server's own message where it is the best explanation.
export function friendlyError(err, context) {
  if (!(err instanceof APIError)) return err && err.message ? err.message : String(err);
  switch (err.code) {
    case "network":
      return "Cannot reach the server. Check your connection and try again.";
    case "rate_limited": {
      const wait = err.retryAfter ? ` Try again in ${err.retryAfter} s.` : " Wait a moment and try again.";
      const what = context === "login" ? "Too many login attempts." : context === "register" ? "Too many registrations from this address." : "Too many requests.";
      return what + wait;
    }
    case "unauthorized":
      if (context === "login") return "Wrong username or password.";
      return "Your session has ended. Please log in again.";
    case "forbidden":
      return err.message || "You are not allowed to do that.";
    default:
      return err.message || `Request failed (${err.status}).`;
  }
}

export class API {
  constructor({ base = "/api/v1", onUnauthorized } = {}) {
    this.base = base;
    this.token = "";
    this.onUnauthorized = onUnauthorized;
  }

  async request(method, path, body, { auth = true } = {}) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (auth && this.token) headers.Authorization = "Bearer " + this.token;
    let res;
    try {
      res = await fetch(this.base + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "omit",
        cache: "no-store",
      });
    } catch (e) {
      throw new APIError(0, "network", "cannot reach the server");
    }
    let data = null;
    const text = await res.text().catch(() => "");
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!res.ok) {
      const e = (data && data.error) || {};
      const code = e.code || (res.status === 401 ? "unauthorized" : res.status === 429 ? "rate_limited" : "http_" + res.status);
      const err = new APIError(res.status, code, e.message || res.statusText, res.headers.get("Retry-After"));
      if (res.status === 401 && auth && this.token && this.onUnauthorized) this.onUnauthorized(err);
      throw err;
    }
    return data;
  }

  register(username, password, email) {
    const body = { username, password };
    if (email) body.email = email;
    return this.request("POST", "/users", body, { auth: false });
  }
  login(username, password) {
    return this.request("POST", "/login", { username, password }, { auth: false });
  }
  logout() {
    return this.request("POST", "/logout");
  }
  me() {
    return this.request("GET", "/me");
  }
  issueCredential(publicKey) {
    return this.request("POST", "/me/credentials", { public_key: publicKey });
  }
  renewCredential() {
    return this.request("POST", "/me/credentials/renew", {});
  }
  sessions() {
    return this.request("GET", "/me/sessions");
  }
  kickSession(id) {
    return this.request("DELETE", "/me/sessions/" + encodeURIComponent(id));
  }
  rooms() {
    return this.request("GET", "/rooms");
  }
  room(id) {
    return this.request("GET", "/rooms/" + id);
  }
  createRoom(name, description, isPublic) {
    return this.request("POST", "/rooms", { name, description, is_public: isPublic });
  }
  joinRoom(id) {
    return this.request("POST", `/rooms/${id}/join`, {});
  }
  leaveRoom(id) {
    return this.request("POST", `/rooms/${id}/leave`, {});
  }
  members(id) {
    return this.request("GET", `/rooms/${id}/members`);
  }
  addMember(id, username, role) {
    return this.request("POST", `/rooms/${id}/members`, { username, role });
  }
  removeMember(id, userID) {
    return this.request("DELETE", `/rooms/${id}/members/${userID}`);
  }
  deleteRoom(id) {
    return this.request("DELETE", `/rooms/${id}`);
  }
  messages(id, before, limit) {
    const q = new URLSearchParams();
    if (before) q.set("before", String(before));
    if (limit) q.set("limit", String(limit));
    return this.request("GET", `/rooms/${id}/messages?${q}`);
  }
}
