// The Customers' data section (right protect_data): export one customer's conversation as a
// JSON download, or erase it after a confirmation. The API audit-logs both, with the reason
// (docs/security.md, "Customers' data").
import { h } from "./dom.js";

export class PrivacyPanel {
  constructor(root, api, showError) {
    this.root = root;
    this.api = api;
    this.showError = showError;
    this.pending = null; // {id, reason} waiting for "Erase for good"
    this.$("#privacy-form").addEventListener("submit", (event) => event.preventDefault());
    this.$("#privacy-export").addEventListener("click", () => this.exportData());
    this.$("#privacy-erase").addEventListener("click", () => this.ask());
    this.$("#privacy-erase-confirm").addEventListener("click", () => this.erase());
    this.$("#privacy-erase-cancel").addEventListener("click", () => this.cancel());
  }

  $(selector) { return this.root.querySelector(selector); }

  status(text) { this.$("#privacy-status").textContent = text; }

  customer() {
    const id = this.$("#privacy-id").value.trim();
    if (!id) throw new Error("Type the customer's session id first.");
    return id;
  }

  reason(required) {
    const reason = this.$("#privacy-reason").value.trim();
    if (required && !reason) throw new Error("Say why in Reason first: an erasure is audit-logged.");
    return reason;
  }

  async exportData() {
    try {
      const id = this.customer();
      const reason = this.reason(false);
      const query = reason ? `?reason=${encodeURIComponent(reason)}` : "";
      const data = await this.api.request("GET", `/api/customers/${encodeURIComponent(id)}/export${query}`);
      const blob = new Blob([JSON.stringify(data, null, 2)], { type: "application/json" });
      const url = URL.createObjectURL(blob);
      const link = h("a", { href: url, download: `customer-${id}.json`, hidden: true });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
      const found = data.customers[0] || {};
      this.status(`Exported ${id}: ${(found.messages || []).length} messages, `
        + `${(found.notes || []).length} notes (masked: ${data.masked.join(", ") || "nothing"}).`);
    } catch (err) { this.showError(err); }
  }

  ask() {
    try {
      this.pending = { id: this.customer(), reason: this.reason(true) };
      this.status("");
      this.$("#privacy-confirm-text").textContent = `Erase everything of ${this.pending.id}? `
        + "Its messages, notes and held replies are deleted here and in the assistant's "
        + "tracker, its corrections masked. This cannot be undone.";
      this.$("#privacy-confirm").hidden = false;
      this.$("#privacy-erase-confirm").focus();
    } catch (err) { this.showError(err); }
  }

  cancel() {
    this.pending = null;
    this.$("#privacy-confirm").hidden = true;
    this.status("Nothing was erased.");
  }

  async erase() {
    const asked = this.pending;
    this.pending = null;
    this.$("#privacy-confirm").hidden = true;
    if (!asked) return;
    try {
      const data = await this.api.request("POST", `/api/customers/${encodeURIComponent(asked.id)}/erase`,
                                          { reason: asked.reason });
      const done = data.erased[0];
      this.status(`Erased ${asked.id}: ${done.messages} messages, ${done.notes} notes and `
        + `${done.pending_replies} held replies deleted, ${done.corrections_masked} corrections `
        + `masked; the assistant's tracker: ${done.rasa}.`);
    } catch (err) { this.showError(err); }
  }
}
