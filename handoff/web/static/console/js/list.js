// The live list of conversations: a priority queue (queued for a person, risky, or waiting for
// my decision) on top, everything else below, kept current by the /agent pushes.
import { h, since, pct } from "./dom.js";

const RISKY = 0.5;
const MODES = { bot: "Bot", review: "Review", human: "Human", closed: "Closed" };

export class ConversationList {
  constructor({ queue, all, showClosed, me, onSelect }) {
    this.queueEl = queue;
    this.allEl = all;
    this.showClosed = showClosed;
    this.me = me;
    this.onSelect = onSelect;
    this.items = new Map();
    this.selected = null;
    showClosed.addEventListener("change", () => this.render());
    this.timer = setInterval(() => this.tick(), 1000);
  }

  setAll(conversations) {
    const pending = new Set([...this.items.values()].filter((c) => c.pending).map((c) => c.id));
    this.items = new Map(conversations.map((c) => [c.id, { ...c, pending: pending.has(c.id) }]));
    this.render();
  }

  get(id) { return this.items.get(id); }

  upsert(conversation) {
    const old = this.items.get(conversation.id) || {};
    this.items.set(conversation.id, { ...old, ...conversation });
    this.render();
  }

  onMessage(message) {
    const c = this.items.get(message.conversation_id) || { id: message.conversation_id, mode: "bot" };
    if (message.sender === "customer") {
      c.last_customer_text = message.text;
      c.last_customer_at = message.created_at;
    }
    c.last_sender = message.sender;
    c.updated_at = message.created_at || c.updated_at;
    if (message.sender !== "customer") c.pending = false;
    this.items.set(c.id, c);
    this.render();
  }

  onStatus(status) {
    const c = this.items.get(status.conversation_id) || { id: status.conversation_id };
    c.mode = status.mode;
    c.owner = status.owner;
    c.queue_reason = status.queue_reason;
    const queued = Boolean(status.queue_reason) && status.mode !== "closed";
    if (queued && !c.queued) c.queued_at = new Date().toISOString();
    c.queued = queued;
    if (status.mode !== "review") c.pending = false;
    this.items.set(c.id, c);
    this.render();
  }

  onPending(conversationId, pending) {
    const c = this.items.get(conversationId);
    if (!c) return;
    c.pending = pending;
    this.render();
  }

  select(id) {
    this.selected = id;
    this.render();
  }

  priority(c) {
    if (c.mode === "closed") return false;
    return Boolean(c.queued) || (typeof c.risk === "number" && c.risk >= RISKY)
      || (Boolean(c.pending) && (!c.owner || c.owner === this.me));
  }

  /** Since when the customer has waited for an answer, or null. */
  waitingSince(c) {
    if (c.mode === "closed") return null;
    if (c.queued) return c.queued_at || c.last_customer_at || null;
    if (c.last_sender === "customer" || c.pending) return c.last_customer_at || null;
    return null;
  }

  render() {
    const all = [...this.items.values()].filter((c) => this.showClosed.checked || c.mode !== "closed");
    const queue = all.filter((c) => this.priority(c)).sort((a, b) =>
      (b.risk || 0) - (a.risk || 0)
      || String(this.waitingSince(a) || "").localeCompare(String(this.waitingSince(b) || "")));
    const rest = all.filter((c) => !this.priority(c)).sort((a, b) =>
      String(b.last_customer_at || b.updated_at || "").localeCompare(
        String(a.last_customer_at || a.updated_at || "")));
    this.queueEl.replaceChildren(...queue.map((c) => this.row(c)));
    this.allEl.replaceChildren(...rest.map((c) => this.row(c)));
    if (!queue.length) this.queueEl.append(h("li", { class: "empty", text: "Nobody is waiting." }));
    if (!rest.length) this.allEl.append(h("li", { class: "empty", text: "No conversations yet." }));
  }

  row(c) {
    const waiting = this.waitingSince(c);
    const reason = c.queued ? (c.queue_reason || "queued").replaceAll("_", " ") : null;
    return h("li", { class: "conv-row" }, h("button", {
      type: "button", class: `conv mode-${c.mode}`, "data-id": c.id,
      "aria-current": this.selected === c.id ? "true" : null,
      onclick: () => this.onSelect(c.id),
    },
    h("span", { class: "conv-top" },
      h("span", { class: `badge mode ${c.mode}`, text: MODES[c.mode] || c.mode }),
      c.pending && (!c.owner || c.owner === this.me) ? h("span", { class: "badge decide", text: "Needs decision" }) : null,
      reason ? h("span", { class: "badge queued", text: reason }) : null,
      typeof c.risk === "number" ? h("span", {
        class: `badge risk ${c.risk >= RISKY ? "high" : ""}`, text: `risk ${pct(c.risk)}` }) : null,
      h("span", { class: "owner", text: c.owner ? `@${c.owner}` : "" })),
    h("span", { class: "last", text: c.last_customer_text || "(no message yet)" }),
    h("span", { class: "conv-bottom" },
      h("span", { class: "cid", text: c.id.slice(0, 8) }),
      h("span", { class: "waiting", "data-since": waiting || "",
                  text: waiting ? `waiting ${since(waiting)}` : "" }))));
  }

  tick() {
    const now = Date.now();
    for (const el of document.querySelectorAll(".waiting[data-since]")) {
      const iso = el.getAttribute("data-since");
      if (iso) el.textContent = `waiting ${since(iso, now)}`;
    }
  }
}
