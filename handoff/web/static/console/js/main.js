// The agent console: log in, the live conversation list, one conversation with its controls,
// the pending-reply card, suggestions and notes. A client of docs/api.md and nothing else.
import { Api } from "./api.js";
import { h, pct } from "./dom.js";
import { connectLive } from "./live.js";
import { ConversationList } from "./list.js";
import { Notes } from "./notes.js";
import { Whisper } from "./whisper.js";
import { PendingCard } from "./pending.js";
import { ModelsPanel } from "./models.js";
import { TrainerPanel } from "./trainer.js";
import { AuditLog } from "./audit.js";
import { Dashboard } from "./dashboard.js";
import { SpotChecks } from "./spotchecks.js";
import { UsersPanel } from "./users.js";
import { PrivacyPanel } from "./privacy.js";
import { renderTranscript } from "./transcript.js";

const $ = (selector) => document.querySelector(selector);

const api = new Api();
let live = null;
let list = null;
let models = null; // the trainer's models panel (right retrain)
let users = null; // the Users section (right manage_users)
let trainer = null; // the trainers' corrections panel (right review_corrections)
let privacy = null; // the Customers' data section (right protect_data)
let auditLog = null; // the admins' audit log view (right manage_users)
let current = null; // {id, detail}
let presenceSeen = 0; // presences the socket brought: a GET begun before one must not undo it
let domainPromise = null;
let refreshTimer = null;
const suggestions = new Map(); // conversation id -> latest suggestion push (Rasa's prediction)
const suggestedReplies = new Map(); // conversation id -> triage's best replies [{text, source, score}]
let usedSuggestion = null; // {text, source} put into the reply box from a suggestion

function showError(err) {
  const box = $("#alert");
  box.textContent = err && err.message ? err.message : String(err);
  box.hidden = false;
  clearTimeout(showError.timer);
  showError.timer = setTimeout(() => { box.hidden = true; }, 8000);
}

// ------------------------------------------------------------------ login

function showLogin(message) {
  if (live) { live.disconnect(); live = null; }
  $("#app").hidden = true;
  $("#dashboard").hidden = true;
  $("#spot-checks").hidden = true;
  $("#login").hidden = false;
  $("#whoami").hidden = true;
  $("#login-error").textContent = message || "";
  $("#username").focus();
}

$("#login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("#login-error").textContent = "";
  try {
    await api.login($("#username").value.trim(), $("#password").value);
    $("#password").value = "";
    startApp();
  } catch (err) {
    $("#login-error").textContent = err.message;
  }
});

$("#logout").addEventListener("click", async () => {
  await api.serverLogout(); // ends the token on the server, and the live socket with it
  api.logout();
  showLogin("You are logged out.");
});

api.onUnauthorized = () => {
  api.logout();
  showLogin("Your session has ended. Please log in again.");
};

// ------------------------------------------------------------------ the app

// Sections by rights, not by rank: data-right lists the rights any one of which shows it.
function applyRights() {
  for (const el of document.querySelectorAll("[data-right]")) {
    el.hidden = !el.getAttribute("data-right").split(" ").some((right) => api.can(right));
  }
  $("#whoami-name").textContent = api.username;
  $("#whoami-role").textContent = api.tier;
}

// The sections the user's rights open: at login, and again when an admin changes the tier
// (the gateway pushes `rights`; no new login needed).
function openSections() {
  applyRights();
  trainer = api.can("review_corrections")
    ? trainer || new TrainerPanel($("#trainer"), api, showError) : null;
  if (api.can("retrain")) models = models || new ModelsPanel($("#models"), api, showError);
  $("#models").hidden = !api.can("retrain");
  $("#trainer-refresh").onclick = () => {
    if (trainer) trainer.load();
    if (models && api.can("retrain")) models.load();
  };
  if (trainer) trainer.load();
  if (models && api.can("retrain")) models.load();
  if (api.can("manage_users")) {
    users = users || new UsersPanel($("#admin"), api, showError);
    users.load();
    auditLog = auditLog || new AuditLog($("#audit-log"), api, "/api/audit", showError);
    auditLog.load();
  }
  if (api.can("protect_data")) privacy = privacy || new PrivacyPanel($("#privacy"), api, showError);
}

function rightsChanged(pushed) {
  api.setRights(pushed.tier, pushed.rights);
  openSections();
  if (current) $("#whisper").hidden = !api.can("whisper");
  route();
}

async function startApp() {
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#whoami").hidden = false;
  openSections();
  if (!list) {
    list = new ConversationList({ queue: $("#queue"), all: $("#all"),
                                  showClosed: $("#show-closed"), me: api.username,
                                  onSelect: (id) => { location.hash = `#c=${encodeURIComponent(id)}`; } });
  }
  list.me = api.username;
  await reloadList();
  live = connectLive(api.token, {
    conversation: (c) => list.upsert(c),
    message: (m) => { list.onMessage(m); touched(m.conversation_id); },
    status: (s) => { list.onStatus(s); touched(s.conversation_id); },
    pending_reply: (p) => { list.onPending(p.conversation_id, true); touched(p.conversation_id); },
    reply_decided: (d) => {
      list.onPending(d.conversation_id, false);
      if (current && current.id === d.conversation_id) pending.decided(d, api.username);
      touched(d.conversation_id);
    },
    suggestion: (s) => { suggestions.set(s.conversation_id, s); if (current && current.id === s.conversation_id) renderSuggestions(); },
    rasa_error: (e) => { if (current && current.id === e.conversation_id) showError(`Rasa: ${e.error}`); },
    note: (n) => notes.onPush(n),
    risk: (r) => { list.upsert({ id: r.conversation_id, risk: r.risk }); touched(r.conversation_id); },
    suggested_replies: (s) => { suggestedReplies.set(s.conversation_id, s.suggestions || []); if (current && current.id === s.conversation_id) renderSuggestions(); },
    survey: (s) => { list.upsert({ id: s.conversation_id, effort_score: s.effort_score }); touched(s.conversation_id); },
    retrain_progress: (p) => { if (models) models.onProgress(p); },
    retrain_finished: (job) => { if (models) models.onFinished(job); },
    deploy_progress: (p) => { if (models) models.onDeployProgress(p); },
    deploy_finished: (job) => { if (models) models.onDeployFinished(job); },
    model_deployed: () => { domainPromise = null; if (models) models.load(); },
    presence: (p) => { presenceSeen += 1; renderPresence(p); },
    rasa_health: (h) => renderRasaHealth(h),
    rights: (r) => rightsChanged(r),
  }, (state) => {
    const badge = $("#live");
    badge.textContent = { live: "live", reconnecting: "reconnecting\u2026", refused: "offline" }[state];
    badge.className = `live ${state}`;
    // a click while the socket is down would be lost: the button waits for the connection
    $("#presence").disabled = state !== "live";
    if (state === "live") { reloadList(); loadHealth(); if (current) refresh(); }
    if (state === "refused") api.onUnauthorized();
  });
  route();
}

// ------------------------------------------------------------------ presence and Rasa's health

/** Available while logged in here and not marked away (docs/supervision.md). */
function renderPresence(presence) {
  if (!presence || !Array.isArray(presence.logged_in)) return;
  const away = presence.logged_in.includes(api.username)
    && !(presence.available || []).includes(api.username) && presence.open !== false;
  const button = $("#presence");
  button.textContent = away ? "Away" : "Available";
  button.setAttribute("aria-pressed", String(away));
  button.title = presence.open === false ? "Outside the opening hours" : (away
    ? "Customers waiting for a person are told nobody is available; click to be available"
    : "Click to mark yourself away");
}

function renderRasaHealth(health) {
  const badge = $("#rasa-health");
  const down = health && health.state === "down";
  badge.hidden = !down;
  badge.textContent = down ? "assistant down" : "";
  badge.title = down ? `Rasa is not answering since ${health.since}: ${health.error || ""}` : "";
}

async function loadHealth() {
  const seen = presenceSeen;
  try {
    const [presence, health] = await Promise.all([
      api.request("GET", "/api/presence"), api.request("GET", "/api/health/detail")]);
    if (seen === presenceSeen) renderPresence(presence.presence);
    renderRasaHealth(health.rasa);
  } catch (err) {
    if (err.status !== 401) showError(err);
  }
}

$("#presence").addEventListener("click", () => {
  if (!live) return;
  const away = $("#presence").getAttribute("aria-pressed") === "true";
  live.emit("presence", { status: away ? "available" : "away" }, (answer) => {
    if (answer && answer.presence) { presenceSeen += 1; renderPresence(answer.presence); }
    else if (answer && answer.message) showError(answer.message);
  });
});

async function reloadList() {
  try {
    const data = await api.conversations();
    list.setAll(data.conversations || []);
  } catch (err) {
    if (err.status !== 401) showError(err);
  }
}

// ------------------------------------------------------------------ one conversation

function sharedDomain() {
  if (!domainPromise) domainPromise = api.domain().catch(() => { domainPromise = null; return null; });
  return domainPromise;
}

const pending = new PendingCard($("#pending"), {
  api,
  domain: sharedDomain,
  onError: showError,
  onDone: () => refresh(),
});
const notes = new Notes($("#notes"), api, showError);
const whisper = new Whisper($("#whisper"), api, () => sharedDomain());

let dashboard = null; // the Dashboard section (trainers and admins)

/** #dashboard shows the Dashboard instead of the conversations (leads and trainers only). */
function showDashboard() {
  const wanted = location.hash === "#dashboard" && api.can("view_metrics");
  $("#dashboard").hidden = !wanted;
  $("#app").hidden = wanted;
  if (wanted) {
    if (!dashboard) {
      dashboard = new Dashboard($("#dashboard"), api, showError);
      $("#dash-export").onclick = () => dashboard.exportCsv();
    }
    dashboard.load();
  }
  return wanted;
}

let spotChecks = null; // the Spot-checks section (every agent)

/** #spot-checks shows the spot-checks' QA queue instead of the conversations. */
function showSpotChecks() {
  const wanted = location.hash === "#spot-checks" && api.can("approve");
  $("#spot-checks").hidden = !wanted;
  if (wanted) {
    $("#app").hidden = true;
    if (!spotChecks) spotChecks = new SpotChecks($("#spot-checks"), api, showError);
    spotChecks.load();
  }
  return wanted;
}

function route() {
  const spot = showSpotChecks(); // after the dashboard's, which shows #app when not wanted
  if (showDashboard() || spot) {
    if (spot) $("#app").hidden = true;
    return;
  }
  const match = /^#c=(.+)$/.exec(location.hash);
  const id = match ? decodeURIComponent(match[1]) : null;
  if (!id) {
    if (location.hash.length > 1) return; // a section link (#trainer, #admin), not a conversation
    current = null;
    $("#notes").hidden = true;
    $("#whisper").hidden = true;
    $("#conversation").hidden = true;
    $("#no-conversation").hidden = false;
    list && list.select(null);
    return;
  }
  if (!current || current.id !== id) {
    current = { id, detail: null };
    $("#notes").hidden = false;
    pending.clear();
    notes.load(id);
    $("#whisper").hidden = !api.can("whisper");
    if (api.can("whisper")) whisper.load(id);
    renderSuggestions();
  }
  list && list.select(id);
  refresh();
}
window.addEventListener("hashchange", () => { if (api.token) route(); });

function touched(conversationId) {
  if (!current || current.id !== conversationId) return;
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refresh, 120);
}

async function refresh() {
  if (!current) return;
  const id = current.id;
  try {
    const detail = await api.conversation(id);
    if (!current || current.id !== id) return;
    current.detail = detail;
    renderConversation(detail);
    api.suggestions(id).then((found) => {
      suggestedReplies.set(id, found.suggestions || []);
      if (current && current.id === id) renderSuggestions();
    }).catch(() => {}); // suggestions are a help, never a reason to fail the view
  } catch (err) {
    showError(err);
  }
}

function renderConversation(detail) {
  const me = api.username;
  const router = detail.router;
  const conv = detail.conversation;
  $("#no-conversation").hidden = true;
  $("#conversation").hidden = false;
  $("#conv-title").textContent = `Conversation ${conv.id.slice(0, 8)}`;
  const facts = [`mode: ${router.mode}`, router.owner ? `owner: ${router.owner}` : "no owner",
                 router.watchers.length ? `watching: ${router.watchers.join(", ")}` : null,
                 router.queue_reason ? `queued: ${router.queue_reason.replaceAll("_", " ")}` : null,
                 typeof conv.risk === "number" ? `risk ${pct(conv.risk)}` : null,
                 typeof conv.effort_score === "number" ? `effort score ${conv.effort_score}/7` : null,
                 router.busy ? "waiting for Rasa\u2026" : null].filter(Boolean);
  $("#conv-facts").textContent = facts.join(" \u00b7 ");
  const closed = router.mode === "closed";
  const mine = router.owner === me;
  const watching = router.watchers.includes(me);
  const set = (sel, { disabled = false, hidden = false, text } = {}) => {
    const b = $(sel);
    b.disabled = disabled;
    b.hidden = hidden;
    if (text) b.textContent = text;
  };
  set("#btn-watch", { disabled: closed, text: watching ? "Stop watching" : "Watch" });
  set("#btn-review", { disabled: closed || (router.owner && !mine),
                       text: router.mode === "review" ? "Review off" : "Review on" });
  set("#btn-takeover", { disabled: closed || (router.mode === "human" && mine) || (router.owner && !mine) });
  set("#btn-handback", { disabled: closed || !mine });
  set("#btn-close", { disabled: closed });
  $("#compose").hidden = !(router.mode === "human" && mine);
  renderTranscript($("#transcript"), detail.messages || []);
  const reply = router.pending_reply;
  // an unowned (triage) review's held reply is every agent's to decide: the first decision wins
  const decidable = Boolean(reply) && router.mode === "review" && (mine || !router.owner);
  if (decidable) {
    const asked = (detail.messages || []).filter((m) => m.sender === "customer").pop();
    pending.show(conv.id, reply, asked ? asked.text : "", { unowned: !router.owner });
  } else {
    pending.hide({ owner: router.owner, me });
  }
  list.onPending(conv.id, decidable);
  const messages = detail.messages || [];
  const lastCustomer = messages.filter((m) => m.sender === "customer").pop();
  const last = messages[messages.length - 1];
  list.upsert({ id: conv.id, mode: router.mode, owner: router.owner,
                queued: Boolean(router.queue_reason) && !closed, queue_reason: router.queue_reason,
                ...(lastCustomer ? { last_customer_text: lastCustomer.text,
                                     last_customer_at: lastCustomer.created_at } : {}),
                ...(last ? { last_sender: last.sender } : {}) });
}

async function act(action, body) {
  if (!current) return;
  try {
    await api.act(current.id, action, body);
    await refresh();
  } catch (err) {
    showError(err);
  }
}

$("#btn-watch").addEventListener("click", () =>
  act("watch", { on: !current.detail.router.watchers.includes(api.username) }));
$("#btn-review").addEventListener("click", () =>
  act("review", { on: current.detail.router.mode !== "review" }));
$("#btn-takeover").addEventListener("click", () => act("takeover"));
$("#btn-handback").addEventListener("click", () => act("handback"));
$("#btn-close").addEventListener("click", () => act("close"));

$("#compose").addEventListener("submit", async (event) => {
  event.preventDefault();
  const box = $("#compose-text");
  const text = box.value.trim();
  if (!text) return;
  box.value = "";
  const used = usedSuggestion && usedSuggestion.text === text ? usedSuggestion.source : null;
  usedSuggestion = null;
  await act("messages", used ? { text, suggestion: used } : { text });
  box.focus();
});
$("#compose-text").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    $("#compose").requestSubmit();
  }
});

function renderSuggestions() {
  const ul = $("#suggestion-list");
  const s = current && suggestions.get(current.id);
  const items = [];
  // Rasa's own prediction while a person answers, then triage's best replies
  for (const text of s && s.action ? (s.action.messages || []).map((m) => m && m.text).filter(Boolean) : []) {
    items.push({ text, label: s.action.name, source: `prediction:${s.action.name}` });
  }
  for (const r of (current && suggestedReplies.get(current.id)) || []) {
    items.push({ text: r.text, label: `${r.source} \u00b7 ${Math.round(r.score * 100)}%`, source: r.source });
  }
  if (!items.length) {
    ul.replaceChildren(h("li", { class: "empty", text: "No suggestions for this conversation yet." }));
    return;
  }
  ul.replaceChildren(...items.map((item) => h("li", { class: "suggestion" },
    h("span", { class: "chip action", text: item.label }),
    h("p", { text: item.text }),
    h("button", { type: "button", onclick: () => {
      usedSuggestion = { text: item.text, source: item.source };
      $("#compose-text").value = item.text;
      $("#compose-text").focus();
    } }, "Use in my reply"),
    ...[[1, "\u{1F44D}", "Useful suggestion"], [-1, "\u{1F44E}", "Not a useful suggestion"]].map(
      ([rating, icon, label]) => h("button", { type: "button", class: "rate", "aria-label": label,
        onclick: (event) => rateSuggestion(item.source, rating, event.currentTarget) }, icon)))));
}

/** One click: the agent's rating of a suggestion, stored for the Dashboard (docs/metrics.md). */
async function rateSuggestion(source, rating, button) {
  if (!current) return;
  try {
    await api.act(current.id, "suggestions/rating", { suggestion: source, rating });
    for (const b of button.parentElement.querySelectorAll("button.rate")) b.disabled = true;
    button.setAttribute("aria-pressed", "true");
  } catch (err) { showError(err); }
}

// ------------------------------------------------------------------ start

if (api.token) startApp(); else showLogin();
