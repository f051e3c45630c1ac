// The Spot-checks section (every agent): the QA queue of conversations the bot handled alone,
// sampled when they ended (GET /api/spot-checks). A reviewer opens one, marks each bot reply
// right or corrects it (edits its text, or relabels the customer's message it answered), and
// finishes it once every reply is marked; a correction goes to the trainers' queue. Customer
// and bot text goes in as text (dom.js), never as HTML.
import { h, clock } from "./dom.js";

const VERDICT_LABEL = { right: "right", edited: "corrected: edited", relabelled: "corrected: relabelled" };

export class SpotChecks {
  constructor(root, api, onError) {
    this.root = root;
    this.api = api;
    this.onError = onError;
    this.list = root.querySelector("#spot-list");
    this.detail = root.querySelector("#spot-detail");
    this.status = root.querySelector("#spot-status");
    this.openId = null;
  }

  async load() {
    try {
      const data = await this.api.request("GET", "/api/spot-checks");
      this.renderList(data.spot_checks || []);
      if (this.openId !== null) await this.open(this.openId);
    } catch (err) {
      this.onError(err);
    }
  }

  renderList(checks) {
    this.status.textContent = checks.length
      ? `${checks.length} conversation${checks.length === 1 ? "" : "s"} to check`
      : "Nothing to check: no sampled conversation is waiting.";
    this.list.replaceChildren(...checks.map((c) => h("li", {},
      h("button", { type: "button", class: "spot-item", "data-id": c.id,
                    "aria-current": c.id === this.openId ? "true" : null,
                    onclick: () => this.open(c.id) },
        h("strong", { text: c.conversation_id }),
        h("span", { class: "muted small",
                    text: ` ${c.intent || "no intent"} \u00b7 ${c.marked}/${c.bot_messages} marked` })))));
  }

  async open(id) {
    this.openId = id;
    let data;
    try {
      data = await this.api.request("GET", `/api/spot-checks/${encodeURIComponent(id)}`);
    } catch (err) {
      this.onError(err);
      return;
    }
    const marks = new Map(data.marks.map((m) => [m.message_id, m]));
    const bots = data.messages.filter((m) => m.sender === "bot");
    const check = data.spot_check;
    const done = check.status === "done";
    const items = data.messages.map((m) => this.messageItem(check, m, marks.get(m.id), done));
    const left = bots.filter((m) => !marks.has(m.id)).length;
    const finish = h("button", { type: "button", class: "primary", id: "spot-finish",
                                 disabled: left > 0 || done,
                                 onclick: () => this.finish(check.id) },
      done ? "Finished" : "Finish spot-check");
    this.detail.replaceChildren(
      h("h3", { text: `Conversation ${check.conversation_id}` }),
      h("p", { class: "muted small",
               text: `sampled with probability ${Math.round(check.probability * 100)}%` +
                     (check.effort_score ? ` \u00b7 effort score ${check.effort_score}` : "") +
                     ` \u00b7 ${left} repl${left === 1 ? "y" : "ies"} left to mark` }),
      h("ol", { class: "spot-transcript", "aria-label": "Spot-checked transcript" }, items),
      finish);
    for (const button of this.list.querySelectorAll("button.spot-item")) {
      button.toggleAttribute("aria-current", Number(button.dataset.id) === id);
    }
  }

  messageItem(check, message, mark, done) {
    const li = h("li", { class: `msg ${message.sender}`, "data-message-id": message.id },
      h("span", { class: "who", text: message.sender }),
      h("span", { class: "text", text: message.text || "(no text)" }),
      message.sender === "customer" && message.intent
        ? h("span", { class: "badge", text: message.intent }) : null,
      message.sender === "bot" && message.action
        ? h("span", { class: "muted small", text: ` ${message.action} \u00b7 ${clock(message.created_at)}` }) : null);
    if (message.sender !== "bot") return li;
    if (mark) {
      li.append(h("span", { class: `verdict ${mark.verdict}`,
                            text: `${VERDICT_LABEL[mark.verdict] || mark.verdict} by ${mark.reviewer}` }));
      return li;
    }
    if (done) return li;
    const form = this.correctionForm(check, message);
    form.hidden = true;
    li.append(h("span", { class: "spot-actions" },
      h("button", { type: "button", class: "spot-right",
                    onclick: () => this.mark(check.id, { message_id: message.id, verdict: "right" }) },
        "Right"),
      h("button", { type: "button", class: "spot-correct",
                    onclick: () => { form.hidden = !form.hidden; } }, "Correct\u2026")),
      form);
    return li;
  }

  correctionForm(check, message) {
    const text = h("textarea", { rows: 2, class: "spot-text", "aria-label": "Corrected reply" });
    text.value = message.text || "";
    const intent = h("input", { class: "spot-intent", "aria-label": "Intent the customer meant",
                                placeholder: "intent, e.g. track_refund", disabled: true });
    const kind = h("select", { class: "spot-kind", "aria-label": "Correction",
                               onchange: () => {
                                 text.disabled = kind.value !== "edit";
                                 intent.disabled = kind.value !== "relabel";
                               } },
      h("option", { value: "edit" }, "Edit the reply's text"),
      h("option", { value: "relabel" }, "Relabel the customer's intent"));
    return h("form", { class: "spot-form", onsubmit: (event) => {
      event.preventDefault();
      const body = kind.value === "edit"
        ? { message_id: message.id, verdict: "edit", text: text.value }
        : { message_id: message.id, verdict: "relabel", intent: intent.value.trim() };
      this.mark(check.id, body);
    } }, kind, text, intent, h("button", { type: "submit", class: "primary" }, "Save correction"));
  }

  async mark(id, body) {
    try {
      await this.api.request("POST", `/api/spot-checks/${encodeURIComponent(id)}/marks`, body);
    } catch (err) {
      this.onError(err);
      return;
    }
    await this.load();
  }

  async finish(id) {
    try {
      await this.api.request("POST", `/api/spot-checks/${encodeURIComponent(id)}/finish`);
    } catch (err) {
      this.onError(err);
      return;
    }
    this.openId = null;
    this.detail.replaceChildren(h("p", { class: "muted", text: "Spot-check finished." }));
    await this.load();
  }
}
