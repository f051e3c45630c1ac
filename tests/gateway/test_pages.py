"""The customer widget and the agent console in Debian's Chromium, driven by Playwright, against
the real gateway (``python -m handoff`` on a free port) in front of the real Rasa + action
server. A customer's page and one or two agents' consoles run side by side in one browser, each
in its own context (its own localStorage / sessionStorage, like separate people).

Screenshots of each key step go to ``test-artifacts/pages/`` (ignored by git). With
``UPDATE_DOC_SCREENSHOTS=1`` the ones the README shows are also written to ``docs/screenshots/``.

Chromium is ``/usr/bin/chromium`` (Debian's package ``chromium``; ``make test`` installs it):
Playwright never downloads a browser here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import (
    Browser, BrowserContext, Dialog, Error, Page, Request, expect, sync_playwright,
)

from handoff.web.auth import create_user
from handoff.store import Store
from handoff.errors import NotFound
from tests.gateway.conftest import PROJECT_ROOT, Gateway
from tests.gateway.glyphs import missing_glyphs

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "pages"
DOC_SHOTS = PROJECT_ROOT / "docs" / "screenshots"
WAIT_MS = 60_000  # anything that involves Rasa
AGENTS = {"erin": "agent", "frank": "agent", "tina": "trainer"}
XSS = "<img src=x onerror=alert(1)>"
GREETING = "Hi, I'm the Northwind"
ORDER_QUESTION = "where is my order 100002?"

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="Debian's chromium is not installed (apt-get install chromium)")
expect.set_options(timeout=WAIT_MS)


def _password(username: str) -> str:
    return f"{username}-password"


@pytest.fixture(scope="module")
def agents(gateway: Gateway) -> dict[str, str]:
    """The console users of this module (created once in the gateway's database)."""
    async def create() -> None:
        async with Store(gateway.database_url) as store:
            for username, role in AGENTS.items():
                try:
                    await store.get_user(username)
                except NotFound:
                    await create_user(store, username, _password(username), role)  # type: ignore[arg-type]
    asyncio.run(create())
    return AGENTS


@pytest.fixture(scope="module")
def browser(agents: dict[str, str]) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Shots:
    """Screenshots of one test's steps: test-artifacts/pages/<test>/<nn>-<name>.png."""

    def __init__(self, test: str) -> None:
        self.folder = ARTIFACTS / test
        self.folder.mkdir(parents=True, exist_ok=True)
        for old in self.folder.glob("*.png"):
            old.unlink()
        self.count = 0

    def __call__(self, page: Page, name: str, doc: str | None = None) -> None:
        self.count += 1
        path = self.folder / f"{self.count:02d}-{name}.png"
        page.screenshot(path=str(path))
        if doc and os.environ.get("UPDATE_DOC_SCREENSHOTS"):
            DOC_SHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(DOC_SHOTS / f"{doc}.png"))


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Shots:
    return Shots(request.node.name)


class PageWatch:
    """Fails the test on anything a page should never do: a JavaScript dialog (alert), an
    uncaught error, or a request for ``/x`` (what ``<img src=x>`` would load)."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def attach(self, page: Page, who: str) -> Page:
        def on_dialog(dialog: Dialog) -> None:
            self.problems.append(f"{who}: dialog {dialog.type} {dialog.message!r}")
            dialog.dismiss()

        def on_error(exc: Error) -> None:
            self.problems.append(f"{who}: page error {exc}")

        def on_request(req: Request) -> None:
            if req.url.endswith("/x"):
                self.problems.append(f"{who}: requested {req.url}")

        page.on("dialog", on_dialog)
        page.on("pageerror", on_error)
        page.on("request", on_request)
        return page


@pytest.fixture
def watch() -> Iterator[PageWatch]:
    w = PageWatch()
    yield w
    assert w.problems == []


class Customer:
    """A customer on the demo shop page, using the widget."""

    def __init__(self, context: BrowserContext, gateway: Gateway, watch: PageWatch) -> None:
        self.page = watch.attach(context.new_page(), "customer")
        self.url = gateway.url
        self.widget = self.page.locator("#northwind-chat")
        self.log = self.widget.locator(".log")

    def visit(self) -> Customer:
        self.page.goto(f"{self.url}/")
        return self

    def open(self) -> None:
        self.page.get_by_role("button", name="Open chat with Northwind Goods").click()
        expect(self.page.get_by_role("dialog", name="Northwind Goods")).to_be_visible()

    def say(self, text: str) -> None:
        box = self.page.get_by_role("textbox", name="Message", exact=True)
        box.fill(text)
        box.press("Enter")
        expect(self.log.locator(".msg.customer .text").last).to_have_text(text)

    def last(self, who: str) -> Any:
        """The text of the last message from ``who`` (customer, bot, agent, system)."""
        return self.log.locator(f".msg.{who} .text").last

    @property
    def session_id(self) -> str:
        value = self.page.evaluate("window.__northwindChat.sessionId")
        assert isinstance(value, str) and value
        return value


class Console:
    """An agent in the console."""

    def __init__(self, context: BrowserContext, gateway: Gateway, watch: PageWatch,
                 username: str) -> None:
        self.page = watch.attach(context.new_page(), f"console:{username}")
        self.url = gateway.url
        self.username = username

    def login(self) -> Console:
        self.page.goto(f"{self.url}/console")
        self.page.get_by_label("Username", exact=True).fill(self.username)
        self.page.get_by_label("Password", exact=True).fill(_password(self.username))
        self.page.get_by_role("button", name="Log in").click()
        expect(self.page.locator("#live")).to_have_text("live")
        return self

    def row(self, conversation_id: str) -> Any:
        return self.page.locator(f'button.conv[data-id="{conversation_id}"]')

    def open(self, conversation_id: str) -> None:
        self.row(conversation_id).click()
        expect(self.page.locator("#conv-title")).to_have_text(
            f"Conversation {conversation_id[:8]}")

    def control(self, name: str) -> Any:
        return self.page.get_by_role("toolbar", name="Conversation controls").get_by_role(
            "button", name=name, exact=True)

    def turn(self, sender: str, text: str | re.Pattern[str]) -> Any:
        return self.page.locator(f"#transcript .turn.{sender}").filter(
            has=self.page.locator(".turn-text", has_text=text))


def _api(gateway: Gateway, username: str) -> dict[str, str]:
    resp = requests.post(f"{gateway.url}/api/login", timeout=30,
                         json={"username": username, "password": _password(username)})
    resp.raise_for_status()
    return {"Authorization": f"Bearer {resp.json()['token']}"}


def _detail(gateway: Gateway, headers: dict[str, str], conversation_id: str) -> dict[str, Any]:
    resp = requests.get(f"{gateway.url}/api/conversations/{conversation_id}", headers=headers,
                        timeout=30)
    resp.raise_for_status()
    detail: dict[str, Any] = resp.json()
    return detail


class Scene:
    """The people of one test, each in a browser context of their own (own storage, like
    separate people), all closed at the end."""

    def __init__(self, browser: Browser, gateway: Gateway, watch: PageWatch) -> None:
        self.browser = browser
        self.gateway = gateway
        self.watch = watch
        self.opened: list[BrowserContext] = []

    def context(self, **options: Any) -> BrowserContext:
        context = self.browser.new_context(**{"viewport": {"width": 1280, "height": 880},
                                              **options})
        self.opened.append(context)
        return context

    def customer(self, **options: Any) -> Customer:
        return Customer(self.context(**options), self.gateway, self.watch).visit()

    def console(self, username: str, **options: Any) -> Console:
        return Console(self.context(**options), self.gateway, self.watch, username).login()

    def close(self) -> None:
        for context in self.opened:
            context.close()


@pytest.fixture
def scene(browser: Browser, gateway: Gateway, watch: PageWatch) -> Iterator[Scene]:
    s = Scene(browser, gateway, watch)
    yield s
    s.close()


# --------------------------------------------------------------------------- the tests


def test_agent_edits_the_pending_reply_and_the_customer_sees_exactly_that(
    scene: Scene, gateway: Gateway, shots: Shots
) -> None:
    customer = scene.customer()
    erin = scene.console("erin")
    frank = scene.console("frank", viewport={"width": 1100, "height": 800})

    customer.open()
    customer.say("hi")
    expect(customer.last("bot")).to_contain_text(GREETING)
    session_id = customer.session_id
    shots(customer.page, "widget-greeted")

    # the conversation appears in both consoles without a reload, with the customer's words
    for console in (erin, frank):
        expect(console.row(session_id)).to_contain_text("hi")
    erin.open(session_id)
    expect(erin.turn("customer", "hi").locator(".chip.intent")).to_have_text(
        re.compile(r"^greet · \d+%$"))
    expect(erin.turn("bot", GREETING).locator(".chip.action")).to_have_text("utter_greet")

    erin.control("Review on").click()
    expect(erin.control("Review off")).to_be_visible()
    expect(frank.row(session_id)).to_contain_text("Review")  # the other agent sees it live
    expect(frank.row(session_id)).to_contain_text("@erin")

    customer.say("what is your return policy?")
    expect(customer.widget.locator(".typing")).to_be_visible()  # waiting for the reply
    card = erin.page.get_by_role("region", name="Pending reply")
    expect(card).to_contain_text("utter_refund_policy")
    expect(card.locator(".pending-intent")).to_have_text(
        re.compile(r"^Intent: check_refund_policy \(\d+%\)$"))
    bot_text = card.locator(".pending-text").inner_text()
    assert bot_text
    shots(erin.page, "console-pending-reply", doc="console-review")
    expect(customer.log.locator(".msg.bot")).to_have_count(1)  # held: nothing new yet

    erin.page.locator("#transcript").click()  # focus outside any text field
    erin.page.keyboard.press("e")
    editor = card.get_by_role("textbox", name="Edit the bot's reply")
    expect(editor).to_be_focused()
    expect(editor).to_have_value(bot_text)
    edited = "You can return most items within 60 days of delivery, free of charge."
    editor.fill(edited)
    shots(erin.page, "console-editing", doc="console-edit")
    editor.press("Control+Enter")

    expect(customer.last("bot")).to_have_text(edited)
    expect(customer.log.locator(".msg.bot")).to_have_count(2)
    expect(customer.widget.locator(".typing")).to_be_hidden()
    shots(customer.page, "widget-edited-reply", doc="widget")
    expect(card).to_be_hidden()
    sent = erin.turn("bot", edited)
    expect(sent.locator(".chip.action")).to_have_text("utter_refund_policy")
    message = _detail(gateway, _api(gateway, "erin"), session_id)["messages"][-1]
    assert (message["sender"], message["text"], message["decided_by"]) == ("bot", edited, "erin")
    expect(sent.locator(".chip.decision")).to_have_text(
        "edited by erin" if message["decision"] else "sent by erin")
    shots(erin.page, "console-after-edit")


def test_review_by_keyboard_other_response_relabel_and_private_notes(
    scene: Scene, shots: Shots
) -> None:
    customer = scene.customer()
    erin = scene.console("erin")
    frank = scene.console("frank")
    customer.open()
    expect(customer.page.get_by_role("textbox", name="Message", exact=True)).to_be_focused()
    # opening the widget starts the session; the conversation shows up live at the customer's
    # first message (nothing is kept before: docs/security.md)
    expect(customer.page.get_by_role("button", name="End this conversation")).to_be_visible()
    session_id = customer.session_id
    customer.say("hello")
    expect(customer.last("bot")).to_contain_text(GREETING)
    expect(erin.row(session_id)).to_contain_text("hello")
    erin.open(session_id)
    erin.control("Review on").click()
    expect(erin.control("Review off")).to_be_visible()
    card = erin.page.get_by_role("region", name="Pending reply")

    customer.say("hi")
    expect(card).to_contain_text("utter_greet")
    expect(card).not_to_contain_text("null")
    erin.page.keyboard.press("a")  # approve
    expect(customer.last("bot")).to_contain_text(GREETING)
    expect(card).to_be_hidden()

    customer.say("which payment methods do you accept")
    expect(card).to_contain_text("utter_payment_methods")
    erin.page.keyboard.press("r")  # another response, from the domain's searchable list
    search = card.get_by_role("combobox", name="Response or action")
    expect(search).to_be_focused()
    search.fill("delivery_opt")
    option = card.get_by_role("option").filter(has_text="utter_delivery_options")
    expect(option).to_contain_text("We offer Standard delivery")
    shots(erin.page, "console-other-response", doc="console-replace")
    search.press("Enter")
    expect(customer.last("bot")).to_contain_text("We offer Standard delivery")

    customer.say("what is your return policy?")
    expect(card).to_contain_text("utter_refund_policy")
    erin.page.keyboard.press("i")  # relabel the customer's intent
    intents = card.get_by_role("combobox", name="Intent")
    intents.fill("greet")
    expect(card.get_by_role("option").first).to_contain_text("greet")
    intents.press("Enter")
    expect(card.locator(".pending-intent")).to_have_text("Intent: greet (100%)")
    expect(card.locator(".pending-action")).to_contain_text("utter_greet")
    erin.page.keyboard.press("a")
    expect(customer.log.locator(".msg.bot .text").last).to_contain_text(GREETING)
    relabelled = erin.turn("customer", "what is your return policy?")
    expect(relabelled.locator(".chip.intent")).to_have_text("greet · 100%")

    note = "Asked about returns; check the order history next time."
    frank.open(session_id)
    erin.page.get_by_role("textbox", name="New note").fill(note)
    erin.page.get_by_role("button", name="Add note").click()
    expect(frank.page.locator("#notes-list")).to_contain_text(note)  # live, to other agents
    expect(frank.page.locator("#notes-list .note strong")).to_have_text("erin")
    shots(frank.page, "console-notes")
    assert note not in customer.log.inner_text()


def test_takeover_chat_handback_and_the_bot_continues_in_context(
    scene: Scene, gateway: Gateway, shots: Shots
) -> None:
    customer = scene.customer()
    erin = scene.console("erin")
    customer.open()
    customer.say(ORDER_QUESTION)
    expect(customer.last("bot")).to_contain_text("Order 100002 (")
    session_id = customer.session_id

    erin.open(session_id)
    erin.control("Take over").click()
    joined = "A member of our customer-service team has joined the chat."
    expect(customer.last("system")).to_have_text(joined)
    expect(customer.widget.locator("#nw-sub")).to_have_text(
        "You are chatting with our customer-service team")
    compose = erin.page.get_by_role("textbox", name="Your reply to the customer")
    compose.fill("Hello, I'm Erin from Northwind. How can I help with your order?")
    compose.press("Enter")
    agent_said = customer.log.locator(".msg.agent").last
    expect(agent_said.locator(".text")).to_have_text(
        "Hello, I'm Erin from Northwind. How can I help with your order?")
    expect(agent_said.locator(".from")).to_have_text("Customer service")
    customer.say("Is it really on its way?")
    expect(erin.turn("customer", "Is it really on its way?")).to_be_visible()
    compose.fill("Yes, it is with DHL and arrives today.")
    compose.press("Enter")
    expect(customer.last("agent")).to_have_text(
        "Yes, it is with DHL and arrives today.")
    shots(customer.page, "widget-with-agent", doc="widget-agent")
    shots(erin.page, "console-takeover", doc="console-takeover")

    erin.control("Hand back").click()
    expect(customer.last("system")).to_have_text("You are back with the assistant.")
    expect(customer.widget.locator("#nw-sub")).not_to_have_text(
        "You are chatting with our customer-service team")
    customer.say("ok, then cancel it")  # "it": the order the bot was told about before
    expect(customer.last("bot")).to_have_text(
        re.compile(r"^Order 100002 has already left our warehouse"))
    shots(customer.page, "widget-bot-back")

    erin.control("Close").click()
    expect(customer.last("system")).to_have_text(
        "This conversation has ended. Thank you for contacting us.")
    expect(customer.page.get_by_role("button", name="Start a new conversation")).to_be_visible()
    expect(erin.control("Close")).to_be_disabled()


def test_customer_ends_the_chat_and_answers_the_effort_survey(
    scene: Scene, gateway: Gateway, shots: Shots
) -> None:
    customer = scene.customer()
    customer.open()
    customer.say("hi")
    expect(customer.last("bot")).to_contain_text(GREETING)
    session_id = customer.session_id

    customer.page.get_by_role("button", name="End this conversation").click()
    survey = customer.log.locator(".msg.survey")
    expect(survey.locator(".question")).to_have_text(
        "How easy was it to get your issue resolved?", timeout=10_000)
    expect(survey.get_by_role("button")).to_have_count(7)
    shots(customer.page, "widget-survey", doc="widget-survey")
    survey.get_by_role("button", name="6 of 7").click()
    expect(survey).to_contain_text("Thank you for your feedback!", timeout=10_000)
    detail = _detail(gateway, _api(gateway, "erin"), session_id)
    assert (detail["conversation"]["mode"], detail["conversation"]["effort_score"]) == (
        "closed", 6)

    customer.page.get_by_role("button", name="Start a new conversation").click()
    customer.say("hi")  # a fresh conversation with a new session id
    expect(customer.last("bot")).to_contain_text(GREETING)
    assert customer.session_id != session_id
    expect(customer.log.locator(".msg.customer")).to_have_count(1)


def test_markup_from_a_customer_is_shown_as_text_and_never_runs(
    scene: Scene, gateway: Gateway, shots: Shots
) -> None:
    customer = scene.customer()
    erin = scene.console("erin")
    customer.open()
    customer.say(XSS)
    mine = customer.log.locator(".msg.customer .text").last
    expect(mine).to_have_text(XSS)
    assert mine.evaluate("el => el.childElementCount") == 0
    expect(customer.last("bot")).to_be_visible()  # the bot answered (whatever it understood)
    assert customer.log.locator("img").count() == 0
    session_id = customer.session_id

    row = erin.row(session_id)
    expect(row.locator(".last")).to_have_text(XSS)  # the live list, from the message push
    erin.open(session_id)
    said = erin.turn("customer", XSS).locator(".turn-text")
    expect(said).to_have_text(XSS)
    assert said.evaluate("el => el.childElementCount") == 0
    assert erin.page.locator("#transcript img, #conversations img").count() == 0
    shots(customer.page, "widget-markup-as-text")
    shots(erin.page, "console-markup-as-text")
    erin.page.wait_for_timeout(500)  # give a would-be onerror handler its chance to fire


def test_a_reload_keeps_the_conversation_on_a_phone_sized_screen(
    scene: Scene, gateway: Gateway, shots: Shots
) -> None:
    customer = scene.customer(viewport={"width": 390, "height": 844}, is_mobile=True,
                              has_touch=True)
    launcher = customer.page.get_by_role("button", name="Open chat with Northwind Goods")
    launcher.focus()
    customer.page.keyboard.press("Enter")  # keyboard only
    box = customer.page.get_by_role("textbox", name="Message", exact=True)
    expect(box).to_be_focused()
    customer.page.keyboard.type("hi")
    customer.page.keyboard.press("Enter")
    expect(customer.last("bot")).to_contain_text(GREETING)
    session_id = customer.session_id
    panel = customer.page.get_by_role("dialog", name="Northwind Goods").bounding_box()
    assert panel is not None and panel["width"] <= 390 and panel["x"] >= 0
    box.fill("my half-written question")  # typed, not sent

    customer.page.reload()
    expect(customer.page.get_by_role("dialog", name="Northwind Goods")).to_be_visible()
    assert customer.session_id == session_id
    expect(customer.log.locator(".msg.customer .text")).to_have_text(["hi"])
    expect(customer.last("bot")).to_contain_text(GREETING)
    expect(box).to_have_value("my half-written question")
    box.fill(ORDER_QUESTION)
    box.press("Enter")
    expect(customer.last("bot")).to_contain_text("Order 100002 (")
    shots(customer.page, "widget-phone-after-reload", doc="widget-phone")

    customer.page.keyboard.press("Escape")
    expect(launcher).to_be_focused()
    detail = _detail(gateway, _api(gateway, "frank"), session_id)
    assert [(m["sender"], m["text"]) for m in detail["messages"]][::2] == [
        ("customer", "hi"), ("customer", ORDER_QUESTION)]
    assert len(detail["messages"]) == 4


def test_a_button_sends_its_payload_and_shows_its_title(scene: Scene, shots: Shots) -> None:
    customer = scene.customer()
    customer.open()
    customer.say("cancel my order 100003")
    question = customer.log.locator(".msg.bot").filter(has_text="Shall I cancel it?")
    buttons = question.get_by_role("group", name="Suggested answers")
    expect(buttons.get_by_role("button")).to_have_text(["Yes, cancel it", "No, keep it"])
    shots(customer.page, "widget-buttons", doc="widget-buttons")
    buttons.get_by_role("button", name="No, keep it").click()
    expect(customer.last("customer")).to_have_text("No, keep it")  # "/deny" went to Rasa
    expect(customer.last("bot")).to_have_text(
        "OK, I haven't cancelled order 100003; it stays as it is.")
    expect(buttons.get_by_role("button", name="Yes, cancel it")).to_be_disabled()


# A stand-in for socket.io-client, installed before the page's scripts run: the test plays the
# gateway's side with payloads the demo bot never sends (images, cards, links), and with
# acknowledgements it gives only for faults (``answers``: the next acknowledgements' values).
FAKE_IO = """
window.__fake = { handlers: {}, emitted: [], answers: window.__answers || [] };
window.__fake.fire = (event, data) =>
  (window.__fake.handlers[event] || []).forEach((handler) => handler(data));
window.io = () => {
  const socket = {
    connected: true,
    on(event, handler) { (window.__fake.handlers[event] ||= []).push(handler); return socket; },
    emit(event, data) {
      window.__fake.emitted.push([event, data]);
      if (event === "session_request") setTimeout(() => window.__fake.fire("session_confirm", "fake"));
    },
    timeout() {
      return { emit(event, data, ack) {
        window.__fake.emitted.push([event, data]);
        const answer = window.__fake.answers.shift();
        setTimeout(() => ack(null, answer && { ...answer, message_id: data.message_id }));
      } };
    },
  };
  setTimeout(() => window.__fake.fire("connect"));
  return socket;
};
"""


def test_images_cards_and_links_render_and_only_web_addresses_are_used(
    scene: Scene, shots: Shots
) -> None:
    context = scene.context()
    context.add_init_script(FAKE_IO)
    customer = Customer(context, scene.gateway, scene.watch).visit()
    customer.open()
    customer.say("show me mugs")
    emitted = customer.page.evaluate("window.__fake.emitted")
    message_id = emitted[-1][1].get("message_id", "")
    assert re.fullmatch(r"[0-9a-f]{24}", message_id), emitted  # the widget's own id
    assert emitted == [
        ["session_request", {"session_id": None}],
        ["user_uttered", {"message": "show me mugs", "session_id": "fake",
                          "message_id": message_id}]]
    for payload in (
        {"text": "Our guide: https://example.com/mugs. Not this: javascript:alert(1)"},
        {"attachment": {"type": "image", "payload": {"src": "https://example.com/mug.png"}}},
        {"attachment": {"type": "image", "payload": {"src": "javascript:alert(1)"}}},
        {"attachment": "https://example.com/invoice-100001.pdf"},
        {"text": "From a person", "metadata": {"sender": "human", "agent": "erin"}},
        {"attachment": {"type": "template", "payload": {"template_type": "generic", "elements": [
            {"title": "Stoneware mug set", "subtitle": "$32.00",
             "image_url": "javascript:alert(1)",
             "buttons": [{"type": "web_url", "url": "https://example.com/mugs/1",
                          "title": "View"},
                         {"type": "web_url", "url": "javascript:alert(1)", "title": "Evil"},
                         {"type": "postback", "title": "Buy", "payload": "/buy"}]}]}}},
    ):  # the card comes last: only the newest message's buttons stay active
        customer.page.evaluate("payload => window.__fake.fire('bot_uttered', payload)", payload)
    expect(customer.log.locator(".msg.agent .from")).to_have_text("Customer service")
    expect(customer.log.locator(".msg.bot, .msg.agent")).to_have_count(5)  # not the bad image
    links = customer.log.locator("a")
    expect(links).to_have_text(["https://example.com/mugs",
                                "https://example.com/invoice-100001.pdf", "View"])
    hrefs = [links.nth(i).get_attribute("href") for i in range(3)]
    assert hrefs == ["https://example.com/mugs", "https://example.com/invoice-100001.pdf",
                     "https://example.com/mugs/1"]
    images = customer.log.locator("img")
    expect(images).to_have_count(1)
    assert images.get_attribute("src") == "https://example.com/mug.png"
    card = customer.log.locator(".card")
    expect(card.locator("strong")).to_have_text("Stoneware mug set")
    expect(card.get_by_role("button")).to_have_text(["Buy"])
    shots(customer.page, "widget-rich-payloads")
    card.get_by_role("button", name="Buy").click()
    expect(customer.last("customer")).to_have_text("Buy")
    event, sent = customer.page.evaluate("window.__fake.emitted.at(-1)")
    assert (event, sent["message"], sent["session_id"]) == ("user_uttered", "/buy", "fake")
    assert re.fullmatch(r"[0-9a-f]{24}", sent["message_id"]) and sent["message_id"] != message_id


def test_a_message_refused_for_good_keeps_its_text_and_why_and_the_next_one_goes(
    scene: Scene, shots: Shots
) -> None:
    """A refusal no resend can help (the gateway's limit on a message's length is lower than
    the widget's): the message stays in the transcript as text, marked "Not sent" with the
    gateway's reason, is not sent again, and the next message goes; a new conversation puts its
    text back into the message box. The stand-in socket plays the gateway: a real gateway
    refuses the same way (test_app's malformed messages)."""
    context = scene.context()
    reason = "a message may have at most 20 characters"
    context.add_init_script(
        "window.__answers = [{ error: 'message_too_long', message: %r }];\n%s"
        % (reason, FAKE_IO))
    customer = Customer(context, scene.gateway, scene.watch).visit()
    customer.open()
    customer.say(XSS)
    refused = customer.log.locator(".msg.customer").first
    expect(refused.locator(".state")).to_have_text(f"Not sent: {reason}")
    expect(refused.locator(".text")).to_have_text(XSS)
    expect(refused.get_by_role("button")).to_have_count(0)
    customer.page.evaluate("""window.__fake.fire("error", { code: "message_too_long",
        message: "%s", message_id: window.__fake.emitted.at(-1)[1].message_id })""" % reason)
    customer.say("hello")
    expect(customer.log.locator(".msg.customer").last).not_to_contain_text("Not sent")
    expect(refused.locator(".state")).to_have_text(f"Not sent: {reason}")
    expect(customer.log.locator(".msg.note")).to_have_count(0)  # the reason is on the message
    sent = [data for event, data in customer.page.evaluate("window.__fake.emitted")
            if event == "user_uttered"]
    assert [m["message"] for m in sent] == [XSS, "hello"]  # the refused one not again
    assert sent[0]["message_id"] != sent[1]["message_id"]
    shots(customer.page, "widget-refused-for-good")

    customer.page.evaluate("""window.__fake.fire("handoff_notice", { kind: "closed" })""")
    customer.page.get_by_role("button", name="Start a new conversation").click()
    expect(customer.log.locator(".msg")).to_have_count(0)
    expect(customer.page.get_by_role("textbox", name="Message", exact=True)).to_have_value(XSS)


def test_a_customer_asking_for_a_person_tops_the_priority_queue(
    scene: Scene, shots: Shots
) -> None:
    frank = scene.console("frank")
    customer = scene.customer()
    customer.open()
    customer.say("I want to talk to a person")
    expect(customer.last("bot")).to_contain_text("connecting you with a member of our")
    row = frank.page.get_by_role("list", name="Priority queue").locator(
        f'button.conv[data-id="{customer.session_id}"]')
    expect(row.locator(".badge.queued")).to_have_text("bot handoff marker")
    expect(row.locator(".last")).to_have_text("I want to talk to a person")
    expect(row.locator(".waiting")).to_have_text(re.compile(r"^waiting \d+s$"))
    shots(frank.page, "console-priority-queue", doc="console-queue")
    frank.open(customer.session_id)
    frank.control("Take over").click()
    expect(frank.page.get_by_role("list", name="Priority queue").locator(
        f'button.conv[data-id="{customer.session_id}"]')).to_have_count(0)
    expect(customer.last("system")).to_have_text(
        "A member of our customer-service team has joined the chat.")


def test_messages_typed_while_the_network_is_down_are_sent_after_reconnecting(
    scene: Scene, gateway: Gateway, shots: Shots
) -> None:
    customer = scene.customer()
    context = customer.page.context
    customer.open()
    customer.say("hi")
    expect(customer.last("bot")).to_contain_text(GREETING)
    session_id = customer.session_id

    context.set_offline(True)
    expect(customer.widget.locator(".conn")).to_contain_text("Reconnecting", timeout=15_000)
    customer.say(ORDER_QUESTION)
    expect(customer.log.locator(".msg.customer").last).to_contain_text("Not sent yet")
    shots(customer.page, "widget-offline", doc="widget-offline")
    context.set_offline(False)
    expect(customer.last("bot")).to_contain_text("Order 100002 (")
    expect(customer.log.locator(".msg.customer").last).not_to_contain_text("Not sent yet")
    expect(customer.widget.locator(".conn")).to_be_hidden()
    assert customer.session_id == session_id


def test_a_message_whose_acknowledgement_never_came_is_sent_again_and_stored_once(
    scene: Scene, gateway: Gateway, shots: Shots
) -> None:
    """The gateway stores a message but its acknowledgement does not come in time: the test
    holds the SQLite write lock of the gateway's database from another connection (a real
    fault: a database too busy to answer), so the gateway's write waits. The widget (its
    acknowledgement timeout set to 1.5 s for the test) marks the message "Not sent yet" and
    sends it again under the same message_id; once the lock is released the first send is
    stored and the resend is acknowledged without being stored again."""
    context = scene.context()
    context.add_init_script("window.NorthwindChat = { ackTimeoutMs: 1500 };")
    customer = Customer(context, gateway, scene.watch).visit()
    customer.open()
    customer.say("hi")
    expect(customer.last("bot")).to_contain_text(GREETING)
    session_id = customer.session_id

    database = gateway.database_url.removeprefix("sqlite+aiosqlite:///")
    lock = sqlite3.connect(database, isolation_level=None, timeout=30)
    try:
        lock.execute("BEGIN IMMEDIATE")  # the write lock: the gateway's next write waits
        customer.say(ORDER_QUESTION)
        mine = customer.log.locator(".msg.customer").last
        expect(mine).to_contain_text("Not sent yet \u2014 no answer from the chat yet")
        shots(customer.page, "no-acknowledgement")
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    expect(customer.last("bot")).to_contain_text("Order 100002 (")
    expect(mine).not_to_contain_text("Not sent")
    with contextlib.closing(sqlite3.connect(database)) as db:
        said = db.execute("SELECT text FROM messages WHERE conversation_id = ? AND sender = "
                          "'customer' ORDER BY seq", (session_id,)).fetchall()
    assert said == [("hi",), (ORDER_QUESTION,)]


def test_the_role_decides_what_the_console_shows(scene: Scene, gateway: Gateway) -> None:
    erin = scene.console("erin")
    nav = erin.page.get_by_role("navigation", name="Sections")
    expect(nav.get_by_role("link")).to_have_text(["Conversations", "Spot-checks"])
    expect(erin.page.locator("#whoami-role")).to_have_text("agent")
    erin.page.get_by_role("button", name="Log out").click()
    expect(erin.page.get_by_role("heading", name="Log in")).to_be_visible()

    tina = Console(erin.page.context, gateway, scene.watch, "tina").login()
    nav = tina.page.get_by_role("navigation", name="Sections")
    expect(nav.get_by_role("link")).to_have_text(["Conversations", "Training", "Spot-checks",
                                                  "Dashboard"])
    expect(tina.page.get_by_role("heading", name="Training")).to_be_visible()
    # the trainer's panel: triage is off in this gateway, so no emerging needs; the agents'
    # corrections from the tests before wait for review
    expect(tina.page.locator("#needs")).to_contain_text("triage is off")
    queue = tina.page.locator("#correction-queue li.correction")
    expect(queue.first).to_be_visible()
    waiting = queue.count()
    first = requests.get(f"{gateway.url}/api/corrections", params={"status": "new"},
                         headers=_api(gateway, "tina"), timeout=30).json()["corrections"][0]
    queue.first.get_by_role("button", name="Accept").click()
    expect(queue).to_have_count(waiting - 1)
    reviewed = requests.get(f"{gateway.url}/api/corrections", params={"status": "accepted"},
                            headers=_api(gateway, "tina"), timeout=30).json()["corrections"]
    assert [(c["id"], c["reviewed_by"]) for c in reviewed] == [(first["id"], "tina")]
    tina.page.reload()  # the token lives in sessionStorage: still logged in
    expect(tina.page.locator("#whoami-role")).to_have_text("trainer")

    tina.page.get_by_role("button", name="Log out").click()
    tina.page.get_by_label("Username", exact=True).fill("tina")
    tina.page.get_by_label("Password", exact=True).fill("wrong password")
    tina.page.get_by_role("button", name="Log in").click()
    expect(tina.page.locator("#login-error")).to_have_text("wrong username or password")


def test_no_text_in_the_widget_or_the_console_falls_back_to_a_missing_glyph(
    scene: Scene, gateway: Gateway, shots: Shots
) -> None:
    customer = scene.customer()
    probe = customer.page.evaluate(  # the check itself sees a missing glyph where there is one
        "() => { const s = document.createElement('span'); s.id = 'glyph-probe';"
        " s.textContent = '\\u{1F4AC}'; document.body.append(s); }")
    assert probe is None and missing_glyphs(customer.page) == ["U+1F4AC"]
    customer.page.evaluate("() => document.getElementById('glyph-probe').remove()")
    assert missing_glyphs(customer.page) == []  # the shop page and the closed widget
    shots(customer.page, "widget-launcher")

    customer.open()
    customer.say("hi")
    expect(customer.last("bot")).to_contain_text(GREETING)
    assert missing_glyphs(customer.page) == []
    erin = scene.console("erin")
    erin.open(customer.session_id)
    expect(erin.turn("customer", "hi")).to_be_visible()
    assert missing_glyphs(erin.page) == []


def test_an_agent_whispers_a_slot_and_an_action_from_the_conversation_screen(
    scene: Scene, shots: Shots
) -> None:
    customer = scene.customer()
    customer.open()
    customer.say("hi")
    expect(customer.last("bot")).to_contain_text(GREETING)
    erin = scene.console("erin")
    erin.open(customer.session_id)
    panel = erin.page.get_by_role("region", name="Whisper to the bot")
    expect(panel).to_be_visible()
    expect(panel.get_by_label("Slot")).to_contain_text("order_id")
    panel.get_by_label("Slot").select_option("order_id")
    panel.get_by_label("Value").fill("100002")
    panel.get_by_role("button", name="Set slot").click()
    expect(panel.get_by_role("status")).to_have_text("Slot order_id set.")
    shots(erin.page, "console-whisper", doc="console-whisper")
    customer.say("where is my order?")  # the bot uses the whispered order number
    expect(customer.last("bot")).to_contain_text("100002")

    panel.get_by_label("Next action").select_option("utter_ask_order_id")
    panel.get_by_role("button", name="Run as the bot's next").click()
    expect(panel.get_by_role("status")).to_have_text(
        "utter_ask_order_id ran as the bot's next action.")
    expect(customer.last("bot")).to_contain_text("order number")
