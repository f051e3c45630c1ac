// The transcript of one conversation: who said what, and for the bot's turns what the agents
// did with them. Customer text is inserted as text only.
import { h, pct, clock } from "./dom.js";

const WHO = { customer: "Customer", bot: "Bot", agent: "Agent", system: "Notice" };
const DECIDED = { approved: "approved", edited: "edited", replaced: "replaced", written: "written" };

function extras(payload) {
  if (!payload || typeof payload !== "object") return null;
  const parts = [];
  const buttons = payload.buttons || payload.quick_replies;
  if (Array.isArray(buttons) && buttons.length) {
    parts.push(`buttons: ${buttons.map((b) => (b && (b.title || b.payload)) || "?").join(" | ")}`);
  }
  if (payload.image || payload.attachment) parts.push("attachment");
  if (payload.custom) parts.push("custom payload");
  return parts.length ? h("span", { class: "extras", text: `[${parts.join("; ")}]` }) : null;
}

function meta(m) {
  const chips = [];
  if (m.sender === "customer") {
    chips.push(m.intent
      ? h("span", { class: "chip intent", title: "recognised intent and confidence",
                    text: `${m.intent} · ${pct(m.confidence)}` })
      : h("span", { class: "chip muted", text: "intent: not parsed" }));
  }
  if (m.sender === "bot" || m.sender === "agent") {
    if (m.action) chips.push(h("span", { class: "chip action", title: "action", text: m.action }));
    const decision = DECIDED[m.decision];
    if (decision) {
      chips.push(h("span", { class: `chip decision ${decision}`,
                             text: m.decided_by ? `${decision} by ${m.decided_by}` : decision }));
    } else if (m.sender === "agent") {
      chips.push(h("span", { class: "chip decision written",
                             text: `written by ${m.decided_by || "an agent"}` }));
    } else if (m.decided_by) {
      chips.push(h("span", { class: "chip decision", text: `sent by ${m.decided_by}` }));
    } else {
      chips.push(h("span", { class: "chip muted", text: "automatic" }));
    }
  }
  return chips;
}

export function renderTranscript(list, messages) {
  const stick = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.replaceChildren(...messages.map((m) => h("li", {
    class: `turn ${m.sender}`, "data-seq": m.seq,
  },
  h("div", { class: "turn-head" },
    h("span", { class: "who", text: WHO[m.sender] || m.sender }),
    h("time", { datetime: m.created_at, text: clock(m.created_at) }),
    ...meta(m)),
  typeof m.text === "string" ? h("p", { class: "turn-text", text: m.text }) : null,
  extras(m.payload))));
  if (!messages.length) list.append(h("li", { class: "empty", text: "No messages yet." }));
  if (stick) list.scrollTop = list.scrollHeight;
}
