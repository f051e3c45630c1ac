// The console's client of the gateway's JSON API (docs/api.md). The login token is kept in
// sessionStorage: it lives as long as the browser tab.

const KEY = "northwind-console";

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.code = (body && body.error) || "http_error";
    this.body = body || null;
  }
}

export class Api {
  constructor() {
    let saved = {};
    try { saved = JSON.parse(sessionStorage.getItem(KEY) || "{}"); } catch (e) { saved = {}; }
    this.session = saved && saved.token ? saved : null;
    this.onUnauthorized = () => {};
  }

  get token() { return this.session && this.session.token; }
  get username() { return this.session && this.session.username; }
  get tier() { return this.session && this.session.tier; }
  can(right) { return !!(this.session && (this.session.rights || []).includes(right)); }

  async request(method, path, body) {
    const headers = { Accept: "application/json" };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const resp = await fetch(path, { method, headers,
      body: body === undefined ? undefined : JSON.stringify(body) });
    let data = null;
    try { data = await resp.json(); } catch (e) { data = null; }
    if (!resp.ok) {
      const error = new ApiError(resp.status, data);
      if (resp.status === 401 && path !== "/api/login") this.onUnauthorized(error);
      throw error;
    }
    return data;
  }

  async login(username, password) {
    const data = await this.request("POST", "/api/login", { username, password });
    this.session = { token: data.token, tier: data.tier, rights: data.rights, username,
                     expires_at: data.expires_at };
    sessionStorage.setItem(KEY, JSON.stringify(this.session));
    return this.session;
  }

  /** The tier changed while logged in (the `rights` push): the same token, new rights. */
  setRights(tier, rights) {
    if (!this.session) return;
    this.session = { ...this.session, tier, rights };
    sessionStorage.setItem(KEY, JSON.stringify(this.session));
  }

  async serverLogout() {
    try { await this.request("POST", "/api/logout"); } catch (e) { /* ended already */ }
  }

  logout() {
    this.session = null;
    sessionStorage.removeItem(KEY);
  }

  conversations() { return this.request("GET", "/api/conversations"); }
  conversation(id) { return this.request("GET", `/api/conversations/${encodeURIComponent(id)}`); }
  act(id, action, body) {
    return this.request("POST", `/api/conversations/${encodeURIComponent(id)}/${action}`, body);
  }
  decide(id, replyId, body) {
    return this.act(id, `replies/${encodeURIComponent(replyId)}/decision`, body);
  }
  domain() { return this.request("GET", "/api/domain"); }
  notes(id) { return this.request("GET", `/api/conversations/${encodeURIComponent(id)}/notes`); }
  suggestions(id) { return this.request("GET", `/api/conversations/${encodeURIComponent(id)}/suggestions`); }
  addNote(id, text) { return this.act(id, "notes", { text }); }
  whisper(id, body) { return this.act(id, "whisper", body); }
}
