/*
 * Northwind Goods customer chat widget. Embed it in any page with one tag:
 *
 *   <script src="https://gateway.example/widget.js" defer
 *           data-title="Northwind Goods" data-primary-colour="#1d4ed8"></script>
 *
 * or set window.NorthwindChat = {gatewayUrl, title, subtitle, colours: {primary, onPrimary,
 * background, text}} before it. It speaks Rasa's socketio protocol to the gateway
 * (session_request / session_confirm, user_uttered / bot_uttered) plus the gateway's extra
 * events (handoff_notice, survey_request, survey_thanks, error). docs/widget.md has the rest.
 *
 * Everything a customer, the bot or an agent wrote is inserted as text (textContent / text
 * nodes), never as HTML. The UI lives in a shadow root so the host page's styles don't leak in.
 */
(function () {
  "use strict";
  if (window.__northwindChat) return;

  const script = document.currentScript;
  const data = (script && script.dataset) || {};
  const cfg = Object.assign({}, window.NorthwindChat || {});
  const scriptOrigin = script && script.src ? new URL(script.src, location.href).origin
    : location.origin;
  const gatewayUrl = String(cfg.gatewayUrl || data.gatewayUrl || scriptOrigin).replace(/\/+$/, "");
  const title = String(cfg.title || data.title || "Northwind Goods");
  const subtitle = String(cfg.subtitle || data.subtitle || "Ask our assistant; a person is never far away");
  const colours = Object.assign({}, cfg.colours || {});
  if (data.primaryColour) colours.primary = data.primaryColour;
  const STORE_KEY = "northwind-chat:" + gatewayUrl;
  const MAX_LOG = 200;
  const TYPING_TIMEOUT_MS = 30000;
  // How long a message waits for the gateway's acknowledgement before it is sent again.
  const ACK_TIMEOUT_MS = Math.max(1000, Number(cfg.ackTimeoutMs) || 15000);
  const RETRY_FIRST_MS = 1000;  // the back-off of automatic resends: 1 s, 2 s, 4 s ... 30 s
  const RETRY_MAX_MS = 30000;
  const RATE_WAIT_MS = 10000;  // after "too many messages": wait at least this long
  // Refusals that say nothing about the message itself: it is sent again by itself. Any
  // other refusal (too long, conversation ended, ...) is final: the text stays, with why.
  const RETRYABLE = new Set(["service_unavailable", "internal_error", "rate_limited",
                             "no_session", "session_mismatch"]);

  // ------------------------------------------------------------------ state (localStorage)

  function load() {
    try {
      const raw = window.localStorage.getItem(STORE_KEY);
      const parsed = raw ? JSON.parse(raw) : null;
      if (parsed && typeof parsed === "object") return parsed;
    } catch (e) { /* storage blocked or corrupt: start fresh */ }
    return {};
  }
  const state = Object.assign({
    sessionId: null, sessionSecret: null, open: false, closed: false, mode: "bot", log: [],
    outbox: [], draft: "",
    nextId: 1,
  }, load());

  function save() {
    state.log = state.log.slice(-MAX_LOG);
    try { window.localStorage.setItem(STORE_KEY, JSON.stringify(state)); } catch (e) { /* */ }
  }

  // ------------------------------------------------------------------ DOM helpers

  function h(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of [].concat(children || [])) {
      if (child !== null && child !== undefined) {
        node.append(typeof child === "string" ? document.createTextNode(child) : child);
      }
    }
    return node;
  }

  function safeUrl(value) {
    if (typeof value !== "string" || !value) return null;
    try {
      const url = new URL(value, gatewayUrl + "/");
      return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
    } catch (e) {
      return null;
    }
  }

  /** Text with its web addresses as links; everything else stays text. */
  function richText(text) {
    const out = h("p", { class: "text" });
    const pattern = /https?:\/\/[^\s<>"']+[^\s<>"'.,;:!?)]/g;
    let last = 0;
    let match;
    while ((match = pattern.exec(text)) !== null) {
      out.append(document.createTextNode(text.slice(last, match.index)));
      const href = safeUrl(match[0]);
      out.append(href ? h("a", { href, target: "_blank", rel: "noopener noreferrer",
                                  text: match[0] }) : document.createTextNode(match[0]));
      last = match.index + match[0].length;
    }
    out.append(document.createTextNode(text.slice(last)));
    return out;
  }

  // ------------------------------------------------------------------ the widget's frame

  const host = h("div", { id: "northwind-chat" });
  const root = host.attachShadow({ mode: "open" });
  const vars = { primary: "--nw-primary", onPrimary: "--nw-on-primary",
                 background: "--nw-background", text: "--nw-text" };
  for (const [key, prop] of Object.entries(vars)) {
    if (typeof colours[key] === "string") host.style.setProperty(prop, colours[key]);
  }

  /** A speech bubble drawn inline, so it shows on machines without an emoji font. */
  function chatIcon() {
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    for (const [key, value] of Object.entries({ class: "launcher-icon", viewBox: "0 0 24 24",
                                                width: "22", height: "22",
                                                "aria-hidden": "true", focusable: "false" })) {
      svg.setAttribute(key, value);
    }
    const bubble = document.createElementNS(ns, "path");
    bubble.setAttribute("d", "M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V6"
                             + "a2 2 0 0 1 2-2z");
    bubble.setAttribute("fill", "currentColor");
    svg.append(bubble);
    for (const x of [8, 12, 16]) {
      const dot = document.createElementNS(ns, "circle");
      for (const [key, value] of Object.entries({ cx: x, cy: 11, r: 1.4 })) {
        dot.setAttribute(key, String(value));
      }
      svg.append(dot);
    }
    return svg;
  }

  const launcher = h("button", {
    class: "launcher", type: "button", "aria-label": "Open chat with " + title,
    "aria-expanded": "false", "aria-controls": "nw-panel",
  }, [chatIcon(), h("span", { text: "Chat with us" })]);
  const heading = h("h2", { id: "nw-title", text: title });
  const status = h("p", { class: "sub", id: "nw-sub", text: subtitle });
  const endButton = h("button", { class: "end", type: "button", text: "End chat",
                                  "aria-label": "End this conversation" });
  const minimise = h("button", { class: "minimise", type: "button", "aria-label": "Minimise chat",
                                 text: "\u2013" });
  const conn = h("p", { class: "conn", role: "status", "aria-live": "polite" });
  const log = h("ol", { class: "log", role: "log", "aria-live": "polite",
                        "aria-label": "Conversation", tabindex: "0" });
  const typing = h("div", { class: "typing", hidden: true }, [
    h("span", { class: "dots", "aria-hidden": "true" }, [h("i"), h("i"), h("i")]),
    h("span", { class: "typing-label", text: "The assistant is typing\u2026" }),
  ]);
  const typingStatus = h("p", { class: "sr", role: "status", "aria-live": "polite" });
  const input = h("textarea", { id: "nw-input", rows: "1", maxlength: "2000",
                                placeholder: "Type your message\u2026", "aria-label": "Message",
                                autocomplete: "off" });
  const send = h("button", { class: "send", type: "submit", "aria-label": "Send message",
                             text: "Send" });
  const composer = h("form", { class: "composer", "aria-label": "Write a message" },
                     [input, send]);
  const restart = h("button", { class: "restart", type: "button", hidden: true,
                                text: "Start a new conversation" });
  const panel = h("section", { class: "panel", id: "nw-panel", role: "dialog",
                               "aria-labelledby": "nw-title", "aria-describedby": "nw-sub",
                               hidden: true }, [
    h("header", {}, [h("div", { class: "titles" }, [heading, status]), endButton, minimise]),
    conn, log, typing, typingStatus, restart, composer,
  ]);
  root.append(h("link", { rel: "stylesheet", href: gatewayUrl + "/static/widget/widget.css" }),
              launcher, panel);

  // ------------------------------------------------------------------ rendering

  function whoOf(payload) {
    const sender = payload && payload.metadata && payload.metadata.sender;
    return sender === "human" ? "agent" : sender === "system" ? "system" : "bot";
  }

  function quickReplies(replies, active) {
    const row = h("div", { class: "replies", role: "group", "aria-label": "Suggested answers" });
    for (const reply of replies) {
      if (!reply || typeof reply !== "object") continue;
      const label = String(reply.title || reply.payload || "");
      if (reply.type === "web_url") {  // a link button; one to a non-web address is dropped
        const href = safeUrl(reply.url);
        if (href) {
          row.append(h("a", { class: "reply", href, target: "_blank", rel: "noopener noreferrer",
                              text: label }));
        }
        continue;
      }
      row.append(h("button", {
        class: "reply", type: "button", text: label, disabled: !active,
        onclick: () => sendText(label, typeof reply.payload === "string" ? reply.payload : label),
      }));
    }
    return row;
  }

  function attachment(att, active) {
    if (typeof att === "string") {
      const href = safeUrl(att);
      return href ? h("a", { class: "link", href, target: "_blank", rel: "noopener noreferrer",
                             text: att }) : richText(att);
    }
    if (!att || typeof att !== "object") return null;
    const payload = att.payload || {};
    const src = safeUrl(payload.src || payload.url || att.url);
    if (att.type === "image" && src) {
      return h("img", { class: "image", src, alt: String(payload.alt || payload.title || "Image"),
                        loading: "lazy" });
    }
    if (att.type === "template" && Array.isArray(payload.elements)) {
      const cards = h("div", { class: "cards" });
      for (const el of payload.elements) {
        if (!el || typeof el !== "object") continue;
        const image = safeUrl(el.image_url);
        cards.append(h("div", { class: "card" }, [
          image ? h("img", { src: image, alt: String(el.title || "") }) : null,
          el.title ? h("strong", { text: String(el.title) }) : null,
          el.subtitle ? h("p", { text: String(el.subtitle) }) : null,
          Array.isArray(el.buttons) ? quickReplies(el.buttons, active) : null,
        ]));
      }
      return cards;
    }
    if (src) {
      return h("a", { class: "link", href: src, target: "_blank", rel: "noopener noreferrer",
                      text: String(payload.title || payload.name || src) });
    }
    return null;
  }

  function survey(entry) {
    const box = h("div", { class: "survey", role: "group", "aria-labelledby": "nw-survey-q-" + entry.id });
    box.append(h("p", { class: "question", id: "nw-survey-q-" + entry.id, text: entry.question }));
    if (entry.thanked) {
      box.append(h("p", { class: "thanks", text: "Thank you for your feedback!" }));
      return box;
    }
    const scale = h("div", { class: "scale" });
    for (let score = entry.min; score <= entry.max; score += 1) {
      const low = entry.low || "Very difficult";
      const high = entry.high || "Very easy";
      const hint = score === entry.min ? ", " + low : score === entry.max ? ", " + high : "";
      scale.append(h("button", {
        type: "button", class: "score", text: String(score),
        "aria-label": score + " of " + entry.max + hint,
        "aria-pressed": entry.score === score ? "true" : "false",
        disabled: entry.score !== undefined && entry.score !== null,
        onclick: () => answerSurvey(entry, score),
      }));
    }
    box.append(scale, h("div", { class: "scale-ends", "aria-hidden": "true" },
                        [h("span", { text: entry.low || "Very difficult" }),
                         h("span", { text: entry.high || "Very easy" })]));
    return box;
  }

  // A customer waiting for a person is offered a choice (handoff_offer; the text itself comes
  // as a system message): keep waiting, continue with the assistant, or leave a contact.
  function offer(entry) {
    const box = h("div", { class: "offer", role: "group", "aria-label": "What would you like to do?" });
    const done = entry.chosen !== null && entry.chosen !== undefined;
    const row = h("div", { class: "replies" });
    const labels = { wait: "Keep waiting", bot: "Continue with the assistant",
                     contact: "Leave an e-mail or phone number" };
    for (const option of entry.options) {
      if (!labels[option]) continue;
      row.append(h("button", {
        type: "button", class: "choice", text: labels[option], disabled: done,
        "aria-pressed": entry.chosen === option ? "true" : "false",
        onclick: () => {
          if (option === "contact") {
            entry.asking = true;
            save();
            rerender(entry);
            const field = log.querySelector('[data-id="' + entry.id + '"] input');
            if (field) field.focus();
          } else {
            choose(entry, option, undefined);
          }
        },
      }));
    }
    box.append(row);
    if (entry.asking && !done) {
      const field = h("input", { type: "text", class: "contact", maxlength: "254",
                                 autocomplete: "email", "aria-label": "E-mail address or phone number",
                                 placeholder: "E-mail address or phone number" });
      const form = h("form", { class: "contact-form" }, [
        field, h("button", { type: "submit", class: "choice", text: "Send" })]);
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        if (field.value.trim()) choose(entry, "contact", field.value.trim());
      });
      box.append(form);
    }
    return box;
  }

  function choose(entry, choice, contact) {
    if (!socket || !socket.connected || !state.sessionId) return;
    entry.chosen = choice;
    entry.asking = false;
    save();
    rerender(entry);
    const data = { session_id: state.sessionId, choice };
    if (contact !== undefined) data.contact = contact;
    socket.emit("handoff_choice", data);
  }

  function renderEntry(entry, isLast) {
    const li = h("li", { class: "msg " + entry.who, "data-id": entry.id });
    if (entry.who === "customer") {
      li.append(h("span", { class: "sr", text: "You said: " }), richText(entry.text));
      if (!entry.sent) {
        li.classList.add(entry.failed ? "failed" : "queued");
        li.append(...sendingState(entry));
      }
      return li;
    }
    if (entry.who === "survey") {
      li.append(survey(entry));
      return li;
    }
    if (entry.who === "offer") {
      li.append(offer(entry));
      return li;
    }
    if (entry.who === "note") {
      li.append(h("p", { class: "text", text: entry.text }));
      return li;
    }
    const p = entry.data || {};
    const who = entry.who;
    if (who === "agent") li.append(h("span", { class: "from", text: "Customer service" }));
    else if (who === "bot") li.append(h("span", { class: "sr", text: "Assistant: " }));
    if (typeof p.text === "string" && p.text) li.append(richText(p.text));
    const replies = p.quick_replies || p.buttons;
    if (Array.isArray(replies) && replies.length) li.append(quickReplies(replies, isLast));
    if (p.attachment) {
      const node = attachment(p.attachment, isLast);
      if (node) li.append(node);
    }
    if (typeof p.image === "string") {
      const node = attachment({ type: "image", payload: { src: p.image } }, isLast);
      if (node) li.append(node);
    }
    return li;
  }

  /**
   * How far an unsent message has got: "Not sent yet", with the gateway's reason when it
   * refused it (as text), and a "Retry now" button while it is being sent again by itself.
   * A message refused for good ("failed") keeps its text and says why.
   */
  function sendingState(entry) {
    const out = [];
    const failed = entry.failed === true;
    const why = typeof entry.problem === "string" && entry.problem ? entry.problem : "";
    out.push(h("span", { class: "state", text: failed ? "Not sent" + (why ? ": " + why : "")
      : "Not sent yet" + (why ? " \u2014 " + why + ". Sending again\u2026" : "") }));
    if (!failed && entry.tries) {
      out.push(h("button", { type: "button", class: "retry", text: "Retry now",
                             "aria-label": "Send this message again now",
                             onclick: retryNow }));
    }
    return out;
  }

  function renderAll() {
    log.replaceChildren(...state.log.map((e, i) => renderEntry(e, i === state.log.length - 1)));
    scrollDown();
    renderChrome();
  }

  function addEntry(entry) {
    entry.id = state.nextId++;
    state.log.push(entry);
    save();
    const previous = log.lastElementChild;
    if (previous) {  // an older message's quick replies no longer apply
      for (const b of previous.querySelectorAll("button.reply")) b.disabled = true;
    }
    log.append(renderEntry(entry, true));
    scrollDown();
    return entry;
  }

  function rerender(entry) {
    const old = log.querySelector('[data-id="' + entry.id + '"]');
    if (old) old.replaceWith(renderEntry(entry, state.log[state.log.length - 1] === entry));
  }

  function scrollDown() {
    log.scrollTop = log.scrollHeight;
  }

  function renderChrome() {
    const human = state.mode === "human";
    status.textContent = state.closed ? "This conversation has ended"
      : human ? "You are chatting with our customer-service team"
      : state.mode === "queued" ? "Waiting for a member of our team"
        + (state.position ? " \u2014 you are number " + state.position + " in the queue" : "")
      : subtitle;
    endButton.hidden = !state.sessionId || state.closed;
    composer.hidden = state.closed;
    restart.hidden = !state.closed;
    typing.querySelector(".typing-label").textContent = human
      ? "Customer service is typing\u2026" : "The assistant is typing\u2026";
  }

  // ------------------------------------------------------------------ typing indicator

  let typingTimer = null;
  function showTyping() {
    if (state.mode === "human" || state.mode === "queued") return;
    typing.hidden = false;
    typingStatus.textContent = "The assistant is typing";
    clearTimeout(typingTimer);
    typingTimer = setTimeout(hideTyping, TYPING_TIMEOUT_MS);
    scrollDown();
  }
  function hideTyping() {
    clearTimeout(typingTimer);
    typing.hidden = true;
    typingStatus.textContent = "";
    renderChrome();  // the label again, after a reply_delayed notice changed it
  }

  // ------------------------------------------------------------------ the connection

  let socket = null;
  let confirmed = false;

  function setConn(text) {
    conn.textContent = text;
    conn.hidden = !text;
  }

  function connect() {
    if (socket) return;
    if (typeof window.io !== "function") {
      loadSocketIo().then(connect, () => setConn("The chat could not load. Please try again later."));
      return;
    }
    socket = window.io(gatewayUrl, { path: "/socket.io", reconnectionDelayMax: 4000 });
    socket.on("connect", () => {
      setConn("");
      confirmed = false;
      requestSession();
    });
    socket.on("disconnect", () => {
      confirmed = false;
      inFlight = null;  // whatever was on its way goes again after the reconnect
      attempt += 1;
      cancelRetry();
      setConn("Connection lost. Reconnecting\u2026 anything you write will be sent when we are back.");
    });
    socket.on("connect_error", () => {
      setConn("Can't reach the chat right now. Retrying\u2026 anything you write will be sent when we are back.");
    });
    socket.on("session_confirm", (id) => {
      const sessionId = typeof id === "string" ? id : id && id.session_id;
      if (!sessionId) return;
      if (state.sessionId !== sessionId) state.sessionSecret = null;  // a new conversation
      state.sessionId = sessionId;
      confirmed = true;
      save();
      renderChrome();
      cancelRetry();  // (re)connected: what waits goes now
      flush();
    });
    socket.on("bot_uttered", (payload) => {
      hideTyping();
      if (!payload || typeof payload !== "object") return;
      const entry = { who: whoOf(payload), data: payload };
      // nothing this widget can show (e.g. a custom payload, an image at a non-web address)
      if (!renderEntry(entry, false).querySelector(".text, .replies, .image, .link, .cards")) return;
      addEntry(entry);
    });
    socket.on("handoff_notice", (notice) => {
      const kind = notice && notice.kind;
      if (kind === "reply_delayed") {  // the assistant is busy: its reply is still coming
        showTyping();
        if (!typing.hidden && typeof notice.text === "string") {
          typing.querySelector(".typing-label").textContent = notice.text;  // as text
          typingStatus.textContent = notice.text;
        }
        return;
      }
      hideTyping();
      if (kind === "agent_joined") state.mode = "human";
      else if (kind === "bot_back") state.mode = "bot";
      else if (kind === "handoff_queued") state.mode = "queued";
      else if (kind === "closed") state.closed = true;
      if (kind !== "handoff_queued") {  // no longer waiting: no place, an open offer is void
        state.position = null;
        for (const entry of state.log) {
          if (entry.who === "offer" && !entry.chosen) { entry.chosen = "none"; rerender(entry); }
        }
      }
      save();
      renderChrome();
    });
    socket.on("handoff_offer", (data) => {
      const options = Array.isArray(data && data.options) ? data.options.map(String) : [];
      if (!options.length) return;
      if (typeof (data && data.position) === "number") state.position = data.position;
      addEntry({ who: "offer", options, reason: String(data.reason || ""), chosen: null });
      renderChrome();
    });
    socket.on("queue_position", (data) => {
      if (typeof (data && data.position) !== "number") return;
      state.position = data.position;
      save();
      renderChrome();
    });
    socket.on("survey_request", (req) => {
      const scale = Array.isArray(req && req.scale) ? req.scale : [1, 7];
      const labels = (req && typeof req.labels === "object" && req.labels) || {};
      const min = Number(scale[0]) || 1;
      const max = Number(scale[1]) || 7;
      addEntry({ who: "survey", question: String((req && req.question)
        || "How easy was it to get your issue resolved?"), min, max, score: null,
        low: String(labels[min] || "Very difficult"), high: String(labels[max] || "Very easy"),
        thanked: false });
    });
    socket.on("survey_thanks", () => {
      const entry = [...state.log].reverse().find((e) => e.who === "survey");
      if (!entry) return;
      entry.thanked = true;
      save();
      rerender(entry);
    });
    socket.on("error", (err) => {
      hideTyping();
      const code = err && err.code;
      if (code === "conversation_closed") {
        state.closed = true;
        save();
        renderChrome();
        return;
      }
      if (err && typeof err.message_id === "string") return;  // its message shows why
      if (err && typeof err.message === "string") addEntry({ who: "note", text: err.message });
    });
  }

  /**
   * Ask for our session (or a new one). The gateway joins a known session only when we
   * present its secret, which it sends once, in the acknowledgement of the request that
   * started the session (docs/security.md); we keep it with the session id.
   */
  function requestSession() {
    const request = { session_id: state.sessionId || null };
    if (state.sessionId && state.sessionSecret) request.session_secret = state.sessionSecret;
    socket.emit("session_request", request, (reply) => {
      if (!reply || typeof reply !== "object" || reply.session_id !== state.sessionId) return;
      if (typeof reply.session_secret === "string") {
        state.sessionSecret = reply.session_secret;
        save();
      }
    });
  }

  function loadSocketIo() {
    return new Promise((resolve, reject) => {
      const tag = document.createElement("script");
      tag.src = gatewayUrl + "/vendor/socket.io.min.js";
      tag.async = true;
      tag.onload = resolve;
      tag.onerror = reject;
      document.head.append(tag);
    });
  }

  /**
   * The outbox: the customer's messages not acknowledged yet, oldest first, each with the id
   * the widget gave it (``message_id``). They go one at a time and in order, once the session
   * is confirmed, with a Socket.IO acknowledgement requested, and leave the outbox only when
   * the gateway acknowledges them (it has stored them by then).
   *
   * A message the gateway refused for a passing reason (RETRYABLE: the database is away, too
   * many messages) or that got no acknowledgement within ACK_TIMEOUT_MS stays first in line,
   * marked "Not sent yet" with the reason, and goes again by itself after 1 s, 2 s, 4 s ...
   * (at most 30 s; at least RATE_WAIT_MS after "too many messages"), at once after a
   * reconnect, or when the customer presses "Retry now". It goes under the same message_id,
   * so one the gateway stored whose acknowledgement was lost is not stored twice. A message
   * refused for good (too long, the conversation has ended) leaves the outbox marked "Not
   * sent" with the reason, its text still shown, and the next one goes.
   */
  let inFlight = null;  // the outbox item awaiting its acknowledgement
  let attempt = 0;  // which send an acknowledgement answers: older ones are ignored
  let retryTimer = null;

  const REASONS = {  // what a customer reads for a refusal (the gateway's text otherwise)
    service_unavailable: "the chat has a technical problem",
    internal_error: "the chat has a technical problem",
    rate_limited: "you are sending messages very quickly",
    no_session: "reconnecting to the chat",
    session_mismatch: "reconnecting to the chat",
    conversation_closed: "this conversation has ended",
  };

  function newMessageId() {
    const bytes = new Uint8Array(12);
    window.crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function entryOf(item) {
    return state.log.find((e) => e.id === item.entryId);
  }

  function markEntry(item, fields) {
    const entry = entryOf(item);
    if (!entry) return;
    Object.assign(entry, fields);
    rerender(entry);
  }

  /** The first message goes again after its back-off (and at least ``wait`` ms). */
  function retryLater(item, problem, wait) {
    item.tries = (item.tries || 0) + 1;
    markEntry(item, { problem, tries: item.tries });
    save();
    clearTimeout(retryTimer);
    const backoff = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** Math.min(item.tries - 1, 10));
    retryTimer = setTimeout(() => {
      retryTimer = null;
      flush();
    }, Math.max(wait || 0, backoff * (0.75 + Math.random() * 0.5)));
  }

  function cancelRetry() {
    clearTimeout(retryTimer);
    retryTimer = null;
  }

  function retryNow() {
    cancelRetry();
    if (socket && !socket.connected) socket.connect();
    else flush();
  }

  function flush() {
    if (inFlight || retryTimer || !socket || !socket.connected || !confirmed
        || !state.outbox.length) return;
    const item = state.outbox[0];
    if (typeof item.id !== "string") item.id = newMessageId();  // saved by an older widget
    inFlight = item;
    const mine = ++attempt;
    showTyping();
    const message = { message: item.payload, session_id: state.sessionId, message_id: item.id };
    socket.timeout(ACK_TIMEOUT_MS).emit("user_uttered", message, (err, answer) => {
      if (mine !== attempt) return;  // sent before a reconnect: it goes again after it
      inFlight = null;
      if (err) {  // no acknowledgement in time
        hideTyping();
        retryLater(item, "no answer from the chat yet", 0);
        return;
      }
      if (answer && typeof answer === "object" && typeof answer.error === "string") {
        hideTyping();
        const why = REASONS[answer.error]
          || (typeof answer.message === "string" ? answer.message : answer.error);
        if (RETRYABLE.has(answer.error)) {
          if (answer.error === "no_session" || answer.error === "session_mismatch") {
            confirmed = false;
            requestSession();  // flush() again once session_confirm comes
          }
          retryLater(item, why, answer.error === "rate_limited" ? RATE_WAIT_MS : 0);
          return;
        }
        if (state.outbox[0] === item) state.outbox.shift();
        markEntry(item, { failed: true, problem: why });
        save();
        flush();
        return;
      }
      if (state.outbox[0] === item) state.outbox.shift();
      markEntry(item, { sent: true, problem: null, tries: 0 });
      save();
      flush();
    });
  }

  // ------------------------------------------------------------------ customer actions

  function sendText(text, payload) {
    text = String(text).trim();
    if (!text) return;
    if (state.closed) newConversation();
    const entry = addEntry({ who: "customer", text, sent: false });
    state.outbox.push({ entryId: entry.id, payload: payload || text, id: newMessageId(),
                        tries: 0 });
    save();
    connect();
    flush();
  }

  /**
   * A new conversation. What the customer wrote in the old one and never got sent (refused
   * because it had ended, or still waiting) goes back into the message box, unless they are
   * typing something there, so that starting afresh does not lose it.
   */
  function newConversation() {
    const unsent = state.log.filter((e) => e.who === "customer" && !e.sent).map((e) => e.text);
    if (unsent.length && !input.value.trim()) {
      input.value = unsent.join("\n");
      state.draft = input.value;
    }
    state.sessionId = null;
    state.sessionSecret = null;
    state.closed = false;
    state.mode = "bot";
    state.log = [];
    state.outbox = [];
    inFlight = null;
    attempt += 1;
    cancelRetry();
    save();
    renderAll();
    if (socket && socket.connected) {
      confirmed = false;
      requestSession();
    }
  }

  function answerSurvey(entry, score) {
    if (!socket || !socket.connected || !state.sessionId) return;
    entry.score = score;
    save();
    rerender(entry);
    socket.emit("survey_answer", { session_id: state.sessionId, score });
  }

  function setOpen(open) {
    state.open = open;
    save();
    panel.hidden = !open;
    launcher.hidden = open;
    launcher.setAttribute("aria-expanded", String(open));
    if (open) {
      connect();
      scrollDown();
      (state.closed ? restart : input).focus();
    } else {
      launcher.focus();
    }
  }

  launcher.addEventListener("click", () => setOpen(true));
  minimise.addEventListener("click", () => setOpen(false));
  panel.addEventListener("keydown", (event) => {
    if (event.key === "Escape") setOpen(false);
  });
  endButton.addEventListener("click", () => {
    if (socket && socket.connected && state.sessionId) {
      socket.emit("end_conversation", { session_id: state.sessionId });
    }
  });
  restart.addEventListener("click", () => {
    newConversation();
    input.focus();
  });
  composer.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value;
    if (!text.trim()) return;
    input.value = "";
    state.draft = "";
    sendText(text);
    input.focus();
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      composer.requestSubmit();
    }
  });
  input.addEventListener("input", () => {
    state.draft = input.value;
    save();
  });

  // ------------------------------------------------------------------ start

  function start() {
    document.body.append(host);
    input.value = state.draft || "";
    setConn("");
    renderAll();
    if (state.open) setOpen(true);
    if (state.sessionId || state.outbox.length) connect();
  }

  window.__northwindChat = {
    open: () => setOpen(true),
    close: () => setOpen(false),
    get sessionId() { return state.sessionId; },
  };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
