// The pending-reply card (review mode): the bot's held reply and the owner's decision on it.
// A reply held by triage in an unowned review is shown to every agent; the first decision wins
// and the others' card gives way to a line saying who decided.
// Shortcuts while no text field has focus: A approve, E edit, R other response, W write new,
// I relabel intent; in the editor Ctrl+Enter sends and Escape cancels.
import { h, pct, typingIn } from "./dom.js";
import { picker } from "./picker.js";

function botText(action) {
  return (action.messages || []).map((m) => (m && typeof m.text === "string" ? m.text : ""))
    .filter(Boolean).join("\n\n");
}

export class PendingCard {
  /** ctx: {api, domain: () => Promise<domain|null>, onError(err), onDone()} */
  constructor(root, ctx) {
    this.root = root;
    this.ctx = ctx;
    this.reply = null;
    this.conversationId = null;
    this.mode = null;
    document.addEventListener("keydown", (event) => this.shortcut(event));
  }

  show(conversationId, reply, customerText, { unowned = false } = {}) {
    const same = this.reply && reply && this.reply.reply_id === reply.reply_id
      && this.conversationId === conversationId;
    this.conversationId = conversationId;
    this.reply = reply;
    this.customerText = customerText;
    this.unowned = unowned;
    this.outcome = null;
    if (!same) this.mode = null;
    if (!same || !this.mode) this.render();
  }

  /** No reply to decide. ``owner``/``me``: the conversation's owner and this agent; if the
   * card was open and someone else took the review, it says who instead of vanishing. */
  hide({ owner = null, me = null } = {}) {
    if (this.reply && owner && owner !== me && !this.outcome) {
      this.outcome = `${owner} took this review: the reply is theirs to decide.`;
    }
    this.reply = null;
    this.mode = null;
    if (this.outcome) {
      this.root.hidden = false;
      this.root.replaceChildren(h("p", { class: "decided", role: "status", text: this.outcome }));
      return;
    }
    this.root.hidden = true;
    this.root.replaceChildren();
  }

  /** Another conversation is on screen: forget this one's card and outcome. */
  clear() {
    this.outcome = null;
    this.hide();
  }

  /** A ``reply_decided`` push for the conversation on screen. */
  decided(push, me) {
    if (!this.reply || push.reply_id !== this.reply.reply_id || push.agent === me) return;
    const verbs = { approve: "approved", edit: "edited", write: "replaced with their own words",
                    replace: "replaced with another response", relabel: "relabelled" };
    this.outcome = `${push.agent} decided this reply first (${verbs[push.decision] || push.decision}).`;
    this.reply = null;
    this.mode = null;
    this.root.hidden = false;
    this.root.replaceChildren(h("p", { class: "decided", role: "status", text: this.outcome }));
  }

  shortcut(event) {
    if (!this.reply || this.root.hidden || this.busy) return;
    if (event.ctrlKey || event.metaKey || event.altKey || typingIn(event)) return;
    const key = event.key.toLowerCase();
    const map = { a: () => this.decide({ type: "approve" }), e: () => this.open("edit"),
                  r: () => this.open("replace"), w: () => this.open("write"),
                  i: () => this.open("relabel") };
    if (map[key]) {
      event.preventDefault();
      map[key]();
    }
  }

  open(mode) {
    this.mode = mode;
    this.render();
  }

  async decide(body) {
    if (!this.reply || this.busy) return;
    this.busy = true;
    this.root.setAttribute("aria-busy", "true");
    try {
      await this.ctx.api.decide(this.conversationId, this.reply.reply_id, body);
      this.hide();
      this.ctx.onDone();
    } catch (err) {
      if (err.status === 409 && err.body && err.body.owner) {
        this.outcome = `${err.body.owner} decided first: the review is theirs.`;
        this.hide();
        this.ctx.onDone();
      } else {
        this.ctx.onError(err);
      }
    } finally {
      this.busy = false;
      this.root.removeAttribute("aria-busy");
    }
  }

  render() {
    const reply = this.reply;
    if (!reply) return this.hide();
    const action = reply.action || {};
    const parse = reply.parse;
    const text = botText(action);
    const key = (k) => h("kbd", { "aria-hidden": "true", text: k });
    const button = (label, k, onclick, cls = "") => h("button", {
      type: "button", class: cls, onclick, "aria-keyshortcuts": k,
    }, label, " ", key(k));
    this.root.hidden = false;
    this.root.replaceChildren(
      h("h3", { text: this.unowned ? "The bot's reply is held by triage: any agent may decide"
                                   : "The bot's reply waits for your decision" }),
      h("p", { class: "pending-customer" },
        h("span", { class: "muted", text: "Customer: " }), this.customerText || ""),
      h("p", { class: "pending-intent" },
        h("span", { class: "muted", text: "Intent: " }),
        parse && parse.intent ? `${parse.intent} (${pct(parse.confidence)})` : "unknown"),
      h("p", { class: "pending-action" },
        h("span", { class: "muted", text: "Action: " }),
        `${action.name}${typeof action.confidence === "number" ? ` (${pct(action.confidence)})` : ""}`),
      text ? h("blockquote", { class: "pending-text", text })
           : h("p", { class: "muted", text: "(this action sends no text)" }),
      h("div", { class: "decision-buttons" },
        button("Approve", "A", () => this.decide({ type: "approve" }), "primary approve"),
        button("Edit", "E", () => this.open("edit"), "edit"),
        button("Other response", "R", () => this.open("replace"), "replace"),
        button("Write new", "W", () => this.open("write"), "write"),
        button("Relabel intent", "I", () => this.open("relabel"), "relabel")),
      this.modeArea(text, parse) || "");
    const focus = this.root.querySelector(".editor textarea, .picker-input");
    if (focus) {
      focus.focus();
      if (focus.tagName === "TEXTAREA") focus.setSelectionRange(focus.value.length, focus.value.length);
    }
  }

  modeArea(text, parse) {
    if (this.mode === "edit" || this.mode === "write") {
      const editing = this.mode === "edit";
      const area = h("textarea", { rows: "3", "aria-label": editing ? "Edit the bot's reply" : "Write a new reply" });
      area.value = editing ? text : "";
      const submit = () => {
        if (!area.value.trim()) return;
        this.decide({ type: this.mode, text: area.value });
      };
      area.addEventListener("keydown", (event) => {
        if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); submit(); }
        if (event.key === "Escape") { event.preventDefault(); this.open(null); }
      });
      return h("div", { class: "editor" }, area, h("div", { class: "row" },
        h("button", { type: "button", class: "primary send-edit", onclick: submit },
          editing ? "Send edited reply" : "Send new reply", " ", h("kbd", { text: "Ctrl+Enter" })),
        h("button", { type: "button", onclick: () => this.open(null) }, "Cancel ",
          h("kbd", { text: "Esc" }))));
    }
    if (this.mode === "replace" || this.mode === "relabel") {
      const box = h("div", { class: "chooser" }, h("p", { class: "muted", text: "Loading\u2026" }));
      this.fillChooser(box, parse);
      return box;
    }
    return null;
  }

  async fillChooser(box, parse) {
    const mode = this.mode;
    const domain = await this.ctx.domain();
    if (this.mode !== mode) return;
    let items;
    if (mode === "replace") {
      const alternatives = (this.reply.action.alternatives || []);
      const ranked = new Map(alternatives.map((a) => [a.name, a.confidence]));
      const names = new Set([...alternatives.map((a) => a.name),
                             ...Object.keys((domain && domain.responses) || {}),
                             ...((domain && domain.actions) || [])]);
      items = [...names].map((name) => {
        const variants = domain && domain.responses && domain.responses[name];
        const first = Array.isArray(variants) && variants[0] && variants[0].text;
        return { value: name, detail: first || "",
                 hint: ranked.has(name) ? `bot's alternative ${pct(ranked.get(name))}` : "" };
      }).filter((i) => i.value !== this.reply.action.name);
    } else {
      const ranking = (parse && parse.intent_ranking) || [];
      const scores = new Map(ranking.map((r) => [r.name, r.confidence]));
      const names = new Set([...ranking.map((r) => r.name), ...((domain && domain.intents) || [])]);
      items = [...names].map((name) => ({ value: name,
        hint: scores.has(name) ? pct(scores.get(name)) : "" }))
        .filter((i) => !parse || i.value !== parse.intent);
    }
    const { element, input } = picker({
      label: mode === "replace" ? "Response or action" : "Intent",
      items, free: !domain,
      onChoose: (value) => this.decide(mode === "replace" ? { type: "replace", action: value }
                                                          : { type: "relabel", intent: value }),
    });
    input.addEventListener("keydown", (event) => {
      if (event.key === "Escape") { event.preventDefault(); this.open(null); }
    });
    box.replaceChildren(...(domain ? [] : [h("p", { class: "muted",
      text: "The domain's full lists are unavailable; showing the bot's own ranking. Type a name to use it." })]),
    element);
    input.focus();
  }
}
