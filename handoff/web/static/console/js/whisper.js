// Whisper to the bot (docs/console.md): set a slot of the domain in Rasa's tracker, or run an
// action or response as the bot's next one, without taking the conversation over.
import { h } from "./dom.js";

export class Whisper {
  /** domain: () => Promise<{slots, actions, responses}|null> (GET /api/domain, shared). */
  constructor(root, api, domain) {
    this.api = api;
    this.domain = domain;
    this.slot = root.querySelector("#whisper-slot");
    this.value = root.querySelector("#whisper-value");
    this.action = root.querySelector("#whisper-action");
    this.status = root.querySelector("#whisper-status");
    this.conversationId = null;
    root.querySelector("#whisper-slot-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const value = this.value.value.trim();
      this.send({ slot: this.slot.value, value: value === "" ? null : value },
                `Slot ${this.slot.value} set.`);
    });
    root.querySelector("#whisper-action-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.send({ action: this.action.value }, `${this.action.value} ran as the bot's next action.`);
    });
  }

  async load(conversationId) {
    this.conversationId = conversationId;
    this.status.textContent = "";
    const domain = await this.domain();
    if (this.conversationId !== conversationId) return;
    const slots = (domain && domain.slots) || [];
    const actions = [...new Set([...Object.keys((domain && domain.responses) || {}),
                                 ...((domain && domain.actions) || [])])].sort();
    // names as text (option labels), never as HTML
    this.slot.replaceChildren(...slots.map((name) => h("option", { value: name, text: name })));
    this.action.replaceChildren(...actions.map((name) => h("option", { value: name, text: name })));
    if (!domain) this.status.textContent = "The bot's domain is not available (is Rasa up?).";
  }

  async send(body, done) {
    const id = this.conversationId;
    if (!id) return;
    this.status.textContent = "Sending…";
    try {
      await this.api.whisper(id, body);
      if (this.conversationId !== id) return;
      this.status.textContent = done;
      if ("slot" in body) this.value.value = "";
    } catch (err) {
      if (this.conversationId === id) this.status.textContent = err.message;
    }
  }
}
