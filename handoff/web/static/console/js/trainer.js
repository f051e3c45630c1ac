// The trainer's panel: emerging needs (clusters of unclear customer messages, labelled as an
// intent in one action), the corrections queue (filtered; accepted or rejected one by one or
// in bulk, or edited before accepting with what each choice will write shown) and the review
// log. docs/console.md, "Training"; docs/api.md, "Trainers".
import { AuditLog } from "./audit.js";
import { h, pct } from "./dom.js";

export class TrainerPanel {
  constructor(root, api, showError) {
    this.root = root;
    this.api = api;
    this.showError = showError;
    const filters = root.querySelector("#correction-filters");
    filters.onsubmit = (event) => { event.preventDefault(); this.loadQueue(); };
    root.querySelector("#bulk-accept").onclick = () => this.bulk("accepted");
    root.querySelector("#bulk-reject").onclick = () => this.bulk("rejected");
    root.querySelector("#select-all").onchange = (event) => {
      for (const box of root.querySelectorAll("#correction-queue input.pick")) box.checked = event.target.checked;
    };
    this.audit = new AuditLog(root.querySelector("#review-log"), api, "/api/corrections/audit", showError);
  }

  async load() {
    const queue = this.loadQueue();
    const audit = this.audit.load();
    const needs = this.root.querySelector("#needs");
    needs.replaceChildren(h("p", { class: "muted small", text: "Looking for emerging needs\u2026" }));
    try {
      const found = await this.api.request("GET", "/api/emerging-needs");
      this.renderNeeds(needs, found);
    } catch (err) {
      needs.replaceChildren(h("p", { class: "muted small", text: String(err.message || err) }));
    }
    await queue;
    await audit;
  }

  renderNeeds(root, found) {
    if (!found.clusters.length) {
      root.replaceChildren(h("p", { class: "muted small",
        text: `No clusters among ${found.messages} recent unclear messages.` }));
      return;
    }
    root.replaceChildren(...found.clusters.map((cluster, n) => {
      const input = h("input", { type: "text", id: `need-${n}`, "aria-label": "Intent for these messages",
        value: cluster.proposed_intent === "new" ? "" : cluster.proposed_intent,
        placeholder: "new_intent_name" });
      const status = h("span", { class: "muted small", role: "status" });
      return h("article", { class: "need" },
        h("h3", { text: `${cluster.size} messages \u00b7 proposed: ${cluster.proposed_intent} (${pct(cluster.similarity)})` }),
        h("ul", {}, cluster.members.slice(0, 6).map((m) => h("li", { text: m.text }))),
        h("form", { onsubmit: async (event) => {
          event.preventDefault();
          try {
            const made = await this.api.request("POST", "/api/emerging-needs/label", {
              intent: input.value.trim(), message_ids: cluster.members.map((m) => m.message_id) });
            status.textContent = `${made.corrections.length} NLU examples queued for training.`;
          } catch (err) { this.showError(err); }
        } }, input, h("button", { type: "submit" }, "Make NLU examples"), status));
    }));
  }

  /** The queue's filters (status, type, intent, agent, model) as a query string. */
  query() {
    const params = new URLSearchParams({ limit: "50" });
    const form = this.root.querySelector("#correction-filters");
    for (const name of ["status", "type", "intent", "agent", "model_version"]) {
      const value = form ? form.elements[name].value.trim() : (name === "status" ? "new" : "");
      if (value) params.set(name, value);
    }
    return params.toString();
  }

  async loadQueue() {
    const seq = (this.seq = (this.seq || 0) + 1); // only the latest filter's answer is drawn
    try {
      const { corrections } = await this.api.request("GET", `/api/corrections?${this.query()}`);
      if (seq === this.seq) this.renderQueue(this.root.querySelector("#correction-queue"), corrections);
    } catch (err) { this.showError(err); }
  }

  /** Accept or reject the checked corrections in one request (all or nothing). */
  async bulk(status) {
    const queue = this.root.querySelector("#correction-queue");
    const rows = [...queue.querySelectorAll("li.correction")]
      .filter((row) => row.querySelector("input.pick").checked);
    const out = this.root.querySelector("#bulk-status");
    if (!rows.length) { out.textContent = "Select corrections first."; return; }
    try {
      const done = await this.api.request("POST", "/api/corrections/review",
        { status, ids: rows.map((row) => Number(row.dataset.id)) });
      out.textContent = `${done.corrections.length} ${status}.`;
      rows.forEach((row) => row.remove());
      this.root.querySelector("#select-all").checked = false;
    } catch (err) { this.showError(err); }
  }

  renderQueue(root, corrections) {
    if (!corrections.length) {
      root.replaceChildren(h("p", { class: "muted small", text: "No corrections match." }));
      return;
    }
    root.replaceChildren(...corrections.map((c) => this.row(c)));
  }

  row(c) {
    const before = c.before || {}, after = c.after || {};
    const what = c.type === "relabelled" ? `${before.intent} \u2192 ${after.intent}`
      : c.type === "slot_set" ? `${after.slot || "?"} = ${JSON.stringify(after.value ?? null)}`
      : `${before.action_name || ""} \u2192 ${after.action_name || ""}`;
    const text = texts(after) || (typeof after.text === "string" ? after.text : "");
    const done = async (status, edited) => {
      try {
        const body = { status };
        if (edited) body.after = edited;
        await this.api.request("POST", `/api/corrections/${c.id}/review`, body);
        row.remove();
      } catch (err) { this.showError(err); }
    };
    const editor = h("div", { class: "edit-correction", hidden: true });
    const row = h("li", { class: "correction", "data-id": c.id },
      h("input", { type: "checkbox", class: "pick", "aria-label": `Select correction ${c.id}` }),
      h("span", { class: "chip", text: c.type }), h("span", { text: ` ${what} ` }),
      text ? h("q", { text }) : null,
      h("span", { class: "muted small", text: ` by ${c.agent}${c.model_version ? ` \u00b7 ${c.model_version}` : ""}` }),
      h("button", { type: "button", onclick: () => done("accepted") }, "Accept"),
      h("button", { type: "button", onclick: () => done("rejected") }, "Reject"),
      ["relabelled", "edited", "written", "replaced"].includes(c.type)
        ? h("button", { type: "button", "aria-expanded": "false", onclick: (event) => {
          editor.hidden = !editor.hidden;
          event.target.setAttribute("aria-expanded", String(!editor.hidden));
          if (!editor.hidden && !editor.firstChild) editor.append(this.editForm(c, done));
        } }, "Edit\u2026") : null,
      h("p", { class: "effect small", text: `Accept writes: ${effect(c, after)}` }),
      editor);
    return row;
  }

  /** Edit before accepting: the reply's text or the intent, and how it is learnt, with what
   * that choice will write shown before the trainer accepts. */
  editForm(c, done) {
    const after = c.after || {};
    const fields = [];
    let reply = null, intent = null, choice = null;
    if (["edited", "written"].includes(c.type)) {
      reply = h("textarea", { rows: "3", "aria-label": "Reply text" });
      reply.value = texts(after);
      fields.push(h("label", {}, "Reply text", reply));
    }
    const choices = { edited: ["variation", "policy_changed"],
      written: ["story", "policy_changed", "new_intent"], replaced: ["story", "new_intent"] }[c.type];
    const key = c.type === "edited" ? "edited_as" : "written_as";
    if (choices) {
      choice = h("select", { "aria-label": c.type === "edited" ? "Learn the edit as" : "Learn the reply as" },
        choices.map((value) => h("option", { value, text: value.replace("_", " ") })));
      choice.value = after[key] || choices[0];
      fields.push(h("label", {}, c.type === "edited" ? "Learn the edit as " : "Learn the reply as ", choice));
    }
    if (["relabelled", "written", "replaced"].includes(c.type)) {
      intent = h("input", { type: "text", "aria-label": "Intent", placeholder: "intent_name",
        value: after.intent || "" });
      fields.push(h("label", {}, "Intent ", intent));
    }
    const edited = () => {
      const next = { ...after };
      if (reply && reply.value !== texts(after)) {
        const first = (after.messages || [])[0] || {};
        next.messages = [{ ...first, text: reply.value }];
      }
      if (intent) next.intent = intent.value.trim() || null;
      if (choice) next[key] = choice.value;
      return next;
    };
    const shown = h("p", { class: "effect small", role: "note" });
    const update = () => {
      shown.textContent = `Will write: ${effect(c, edited())}`;
      if (intent && c.type !== "relabelled") intent.closest("label").hidden = choice.value !== "new_intent";
    };
    for (const field of [reply, intent, choice]) if (field) field.addEventListener("input", update);
    if (choice) choice.addEventListener("change", update);
    update();
    return h("form", { onsubmit: (event) => { event.preventDefault(); done("accepted", edited()); } },
      ...fields, shown, h("button", { type: "submit", class: "primary" }, "Accept edited"));
  }
}

function texts(side) {
  return (side.messages || []).map((m) => m.text).filter((t) => typeof t === "string").join("\n\n");
}

/** What the writer makes of the correction accepted with ``after`` (docs/corrections.md). */
export function effect(c, after) {
  const before = c.before || {};
  const response = before.action_name || "the bot's response";
  const intent = after.intent || before.intent || "the intent";
  if (c.type === "relabelled") return `an NLU example of ${after.intent || "?"} (data/corrections/nlu.yml).`;
  if (c.type === "approved") return "nothing for a response (the bot was right); a story for a custom action or form.";
  if (c.type === "takeover") return "a draft of the conversation as a story, for a trainer to finish by hand.";
  if (c.type === "slot_set") return `a story and a test story in which the slot ${after.slot || "?"} is set by the agent's whisper before the bot's next turn (the value masked if it is PII).`;
  if (c.type === "action_chosen") return `a story and a test story ending with ${after.action_name || "the chosen action"}, the action the agent chose for the bot.`;
  if (c.type === "edited") {
    return after.edited_as === "policy_changed"
      ? `policy changed: the response ${response} is replaced in domain.yml by the edited text, for every conversation.`
      : `a variation: the edited text is added to ${response} as another variation (data/corrections/responses.yml).`;
  }
  const how = after.written_as || "story";
  const what = c.type === "written" ? `the reply as a new response utter_${intent}_c${c.id}` : (after.action_name || "the chosen action");
  if (how === "policy_changed") {
    return `policy changed: the reply replaces the text of the response the rule for ${intent} gives, in domain.yml, for every conversation.`;
  }
  if (how === "new_intent") {
    return `a new intent ${after.intent || "?"}: the customer's message becomes its example, and a rule ${after.intent || "?"} \u2192 ${c.type === "written" ? `utter_${after.intent || "?"}_c${c.id}` : what}.`;
  }
  return `this conversation only: a story ending with ${what} (refused at the rule check when a rule answers ${intent}: every intent here has one).`;
}
