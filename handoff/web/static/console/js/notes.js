// Private notes on a conversation: agents only, the customer never sees them.
import { h, clock } from "./dom.js";

export class Notes {
  constructor(root, api, onError) {
    this.api = api;
    this.onError = onError;
    this.list = root.querySelector("#notes-list");
    this.form = root.querySelector("#note-form");
    this.text = root.querySelector("#note-text");
    this.status = root.querySelector("#notes-status");
    this.conversationId = null;
    this.notes = [];
    this.form.addEventListener("submit", (event) => { event.preventDefault(); this.add(); });
    this.text.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); this.add(); }
    });
  }

  async load(conversationId) {
    this.conversationId = conversationId;
    this.notes = [];
    this.render();
    try {
      const data = await this.api.notes(conversationId);
      if (this.conversationId !== conversationId) return;
      this.notes = data.notes || [];
      this.status.textContent = "";
      this.form.hidden = false;
    } catch (err) {
      this.form.hidden = err.status === 404 && err.code !== "not_found";
      this.status.textContent = err.status === 404 && err.code !== "not_found"
        ? "Notes are not available on this gateway yet." : err.message;
    }
    this.render();
  }

  onPush(push) {
    if (!push || push.conversation_id !== this.conversationId || !push.note) return;
    if (this.notes.some((n) => n.id === push.note.id)) return;
    this.notes.push(push.note);
    this.render();
  }

  async add() {
    const text = this.text.value.trim();
    if (!text || !this.conversationId) return;
    try {
      const data = await this.api.addNote(this.conversationId, text);
      this.text.value = "";
      if (data && data.note) this.onPush({ conversation_id: this.conversationId, note: data.note });
    } catch (err) {
      this.onError(err);
    }
  }

  render() {
    this.list.replaceChildren(...this.notes.map((n) => h("li", { class: "note" },
      h("div", { class: "note-head" }, h("strong", { text: n.author || "" }),
        h("time", { datetime: n.created_at, text: clock(n.created_at) })),
      h("p", { text: n.text || "" }))));
    if (!this.notes.length && !this.status.textContent) {
      this.list.append(h("li", { class: "empty", text: "No notes." }));
    }
  }
}
