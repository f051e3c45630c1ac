// An audit log view: who did what, when, filterable by actor and action. The Training section
// reads the corrections' part (GET /api/corrections/audit, right review_corrections), the Users
// section the whole log (GET /api/audit, right manage_users). docs/console.md, "Review log".
import { h } from "./dom.js";

export class AuditLog {
  /** root holds a form (inputs named actor and action) and a tbody; path is the API route. */
  constructor(root, api, path, showError) {
    this.root = root;
    this.api = api;
    this.path = path;
    this.showError = showError;
    this.form = root.querySelector("form");
    this.form.onsubmit = (event) => { event.preventDefault(); this.load(); };
  }

  async load() {
    const params = new URLSearchParams({ limit: "50" });
    for (const name of ["actor", "action"]) {
      const value = this.form.elements[name].value.trim();
      if (value) params.set(name, value);
    }
    try {
      const { entries } = await this.api.request("GET", `${this.path}?${params}`);
      this.render(entries);
    } catch (err) { this.showError(err); }
  }

  render(entries) {
    const body = this.root.querySelector("tbody");
    if (!entries.length) {
      body.replaceChildren(h("tr", {}, h("td", { colspan: "5", class: "muted small",
        text: "Nothing in the log matches." })));
      return;
    }
    body.replaceChildren(...entries.map((e) => h("tr", {},
      h("td", { text: new Date(e.created_at).toLocaleString() }),
      h("td", { text: e.actor }), h("td", { text: e.action }), h("td", { text: e.target || "" }),
      h("td", { class: "small", text: describe(e.details) }))));
  }
}

/** The details of an entry as one line of text: a note, an edit (original → new), a reason. */
function describe(details) {
  if (!details) return "";
  const parts = [];
  if (details.note) parts.push(`note: ${details.note}`);
  if (details.reason) parts.push(`reason: ${details.reason}`);
  if (details.original_after !== undefined) {
    parts.push(`edited: ${summary(details.original_after)} \u2192 ${summary(details.after)}`);
  }
  const rest = Object.keys(details).filter((k) => !["note", "reason", "after", "original_after"].includes(k));
  for (const key of rest) parts.push(`${key}: ${JSON.stringify(details[key])}`);
  return parts.join(" \u00b7 ");
}

function summary(side) {
  if (!side || typeof side !== "object") return String(side);
  const text = (side.messages || []).map((m) => m.text).filter(Boolean).join(" ") || side.text || "";
  const bits = [side.intent, side.action_name, text && `\u201c${text}\u201d`, side.edited_as, side.written_as];
  return bits.filter(Boolean).join(" ");
}
