// The trainer's panel: emerging needs (clusters of unclear customer messages, labelled as an
// intent in one action) and the corrections queue (accept or reject). docs/api.md, "Trainers".
import { h, pct } from "./dom.js";

export class TrainerPanel {
  constructor(root, api, showError) {
    this.root = root;
    this.api = api;
    this.showError = showError;
  }

  async load() {
    const needs = this.root.querySelector("#needs");
    const queue = this.root.querySelector("#correction-queue");
    needs.replaceChildren(h("p", { class: "muted small", text: "Looking for emerging needs\u2026" }));
    try {
      const found = await this.api.request("GET", "/api/emerging-needs");
      this.renderNeeds(needs, found);
    } catch (err) {
      needs.replaceChildren(h("p", { class: "muted small", text: String(err.message || err) }));
    }
    try {
      const { corrections } = await this.api.request("GET", "/api/corrections?status=new&limit=50");
      this.renderQueue(queue, corrections);
    } catch (err) {
      this.showError(err);
    }
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

  renderQueue(root, corrections) {
    if (!corrections.length) {
      root.replaceChildren(h("p", { class: "muted small", text: "No corrections wait for review." }));
      return;
    }
    root.replaceChildren(...corrections.map((c) => {
      const before = c.before || {}, after = c.after || {};
      const what = c.type === "relabelled" ? `${before.intent} \u2192 ${after.intent}`
        : `${before.action_name || ""} \u2192 ${after.action_name || ""}`;
      const row = h("li", { class: "correction" },
        h("span", { class: "chip", text: c.type }), h("span", { text: ` ${what} ` }),
        h("span", { class: "muted small", text: `by ${c.agent}` }),
        ...["accepted", "rejected"].map((status) => h("button", { type: "button", onclick: async () => {
          try {
            await this.api.request("POST", `/api/corrections/${c.id}/review`, { status });
            row.remove();
          } catch (err) { this.showError(err); }
        } }, status === "accepted" ? "Accept" : "Reject")));
      return row;
    }));
  }
}
