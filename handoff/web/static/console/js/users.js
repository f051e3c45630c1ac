// The Users section (right manage_users): the users, their tiers, disable and re-enable, reset
// a password, create a user. Every change sends the reason typed in "Reason" (audit-logged).
import { h } from "./dom.js";

export class UsersPanel {
  constructor(root, api, showError) {
    this.root = root;
    this.api = api;
    this.showError = showError;
    this.tiers = {};
    this.users = [];
    this.next = null;
    root.querySelector("#user-create").addEventListener("submit", (event) => {
      event.preventDefault();
      this.create();
    });
    root.querySelector("#users-more").addEventListener("click", () => this.load(this.next));
  }

  reason() {
    const reason = this.root.querySelector("#user-reason").value.trim();
    if (!reason) throw new Error("Say why in Reason first: every change is audit-logged.");
    return reason;
  }

  status(text) { this.root.querySelector("#users-status").textContent = text; }

  async load(after) {
    try {
      const query = after ? `?after=${encodeURIComponent(after)}` : "";
      const data = await this.api.request("GET", `/api/users${query}`);
      this.tiers = data.tiers || {};
      this.users = after ? this.users.concat(data.users) : data.users;
      this.next = data.next;
      this.render();
    } catch (err) { this.showError(err); }
  }

  async change(username, body, done) {
    try {
      const data = await this.api.request("PATCH", `/api/users/${encodeURIComponent(username)}`,
                                          { ...body, reason: this.reason() });
      this.users = this.users.map((u) => (u.username === username ? data.user : u));
      this.render();
      this.status(done);
    } catch (err) { this.showError(err); this.render(); }
  }

  async reset(username) {
    try {
      const field = this.root.querySelector("#user-new-password");
      await this.api.request("POST", `/api/users/${encodeURIComponent(username)}/password`,
                             { password: field.value, reason: this.reason() });
      field.value = "";
      this.status(`New password set for ${username}.`);
    } catch (err) { this.showError(err); }
  }

  async create() {
    const form = this.root.querySelector("#user-create");
    try {
      const data = await this.api.request("POST", "/api/users", {
        username: form.querySelector("#new-username").value.trim(),
        password: form.querySelector("#new-password").value,
        tier: form.querySelector("#new-tier").value,
        reason: this.reason(),
      });
      form.reset();
      this.users = this.users.concat([data.user]).sort((a, b) => a.username.localeCompare(b.username));
      this.render();
      this.status(`Created ${data.user.username} (${data.user.tier}).`);
    } catch (err) { this.showError(err); }
  }

  tierSelect(user) {
    const select = h("select", { "aria-label": `Tier of ${user.username}` },
      Object.keys(this.tiers).map((tier) => h("option", { value: tier, text: tier,
                                                           selected: tier === user.tier })));
    select.addEventListener("change", () => this.change(user.username, { tier: select.value },
      `${user.username} is now ${select.value}.`));
    return select;
  }

  render() {
    const newTier = this.root.querySelector("#new-tier");
    if (!newTier.options.length) {
      newTier.replaceChildren(...Object.keys(this.tiers).map((tier) =>
        h("option", { value: tier, text: tier, selected: tier === "agent" })));
    }
    const rows = this.users.map((user) => h("tr", {},
      h("th", { scope: "row", text: user.username }),
      h("td", {}, this.tierSelect(user)),
      h("td", { text: user.disabled ? "disabled" : "active" }),
      h("td", {},
        h("button", { type: "button", text: user.disabled ? "Enable" : "Disable",
                      "aria-label": `${user.disabled ? "Enable" : "Disable"} ${user.username}`,
                      onclick: () => this.change(user.username, { disabled: !user.disabled },
                        `${user.username} is ${user.disabled ? "enabled" : "disabled"}.`) }),
        " ",
        h("button", { type: "button", text: "Reset password",
                      "aria-label": `Reset the password of ${user.username}`,
                      onclick: () => this.reset(user.username) }))));
    this.root.querySelector("#user-rows").replaceChildren(...rows);
    this.root.querySelector("#users-more").hidden = !this.next;
  }
}
