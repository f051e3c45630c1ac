"""The assistant end to end: a real Rasa server with the trained model and a real action server
over a freshly seeded shop database, spoken to through Rasa's REST channel."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import PROJECT_ROOT, RestChat

RESPONSES = yaml.safe_load((PROJECT_ROOT / "domain.yml").read_text())["responses"]


def say(name: str, **values: Any) -> str:
    """The text of a domain response as Rasa fills it in."""
    text: str = RESPONSES[name][0]["text"]
    return text.format(**values)


def order_row(db: Path, order_id: str) -> sqlite3.Row:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        row: sqlite3.Row = conn.execute("SELECT * FROM orders WHERE id = ?", (order_id,)).fetchone()
        return row
    finally:
        conn.close()


def test_tracks_a_seeded_order_given_in_the_first_message(chat: RestChat) -> None:
    assert chat.texts("hi, where is my order 100002?") == [
        say("utter_order_status_shipped", order_id="100002", items="2 x Cotton bath towel",
            shipped_on="November 21, 2026", carrier="DHL",
            tracking_number="JD014600006281234567", expected_on="November 28, 2026")
    ]


def test_asks_for_the_order_number_when_it_is_missing(chat: RestChat) -> None:
    assert chat.texts("can you tell me the status of my order") == [say("utter_ask_order_id")]
    assert chat.texts("100008") == [
        say("utter_order_status_shipped", order_id="100008", items="1 x Robot vacuum",
            shipped_on="November 23, 2026", carrier="FedEx", tracking_number="612999991234",
            expected_on="November 30, 2026")
    ]


def test_unknown_order_number_gets_a_helpful_answer(chat: RestChat) -> None:
    assert chat.texts("where is my order 999999") == [
        say("utter_order_not_found", order_id="999999"),
        say("utter_ask_order_id"),
    ]
    # the customer corrects the number and gets the answer
    assert chat.texts("sorry, it's 100001") == [
        say("utter_order_status_delivered", order_id="100001", items="1 x Espresso machine",
            delivered_on="November 5, 2026")
    ]


def test_malformed_order_number_is_explained(chat: RestChat) -> None:
    assert chat.texts("track my order please") == [say("utter_ask_order_id")]
    assert chat.texts("it is 12-AB") == [say("utter_order_id_malformed"), say("utter_ask_order_id")]


def test_address_change_form_end_to_end(chat: RestChat, shop_db: Path) -> None:
    assert chat.texts("I need to change the delivery address of my order") == [
        say("utter_ask_order_id")
    ]
    assert chat.texts("100005") == [say("utter_ask_new_address")]
    assert chat.texts("somewhere nice") == [say("utter_address_invalid"), say("utter_ask_new_address")]
    new_address = "5 Oak Avenue, 10117 Springfield"
    assert chat.texts(new_address) == [
        say("utter_address_changed", order_id="100005", new_address=new_address)
    ]
    assert order_row(shop_db, "100005")["shipping_address"] == new_address


def test_address_of_a_shipped_order_cannot_change(chat: RestChat, shop_db: Path) -> None:
    before = order_row(shop_db, "100008")["shipping_address"]
    assert chat.texts("please send order 100008 to a different address") == [
        say("utter_cannot_change_address", order_id="100008")
    ]
    assert order_row(shop_db, "100008")["shipping_address"] == before


def test_cancellation_asks_for_confirmation_then_cancels(chat: RestChat, shop_db: Path) -> None:
    assert chat.texts("I want to cancel order 100003") == [
        say("utter_ask_cancel_confirmed", order_id="100003",
            items="1 x Noise-cancelling headphones", amount="$159.00")
    ]
    assert order_row(shop_db, "100003")["status"] == "processing"
    assert chat.texts("yes") == [say("utter_order_cancelled", order_id="100003", amount="$159.00")]
    assert order_row(shop_db, "100003")["status"] == "cancelled"
    # asking again does not cancel twice
    assert chat.texts("cancel order 100003") == [
        say("utter_order_already_cancelled", order_id="100003")
    ]


def test_cancellation_declined_keeps_the_order(chat: RestChat, shop_db: Path) -> None:
    messages = chat.say("please cancel my order 100005")
    assert messages[0]["text"] == say("utter_ask_cancel_confirmed", order_id="100005",
                                      items="1 x Desk lamp, 1 x Notebook set", amount="$78.25")
    assert [b["payload"] for b in messages[0]["buttons"]] == ["/affirm", "/deny"]
    assert chat.texts("no, keep it") == [say("utter_cancel_kept", order_id="100005")]
    assert order_row(shop_db, "100005")["status"] == "processing"


def test_fallback_then_offer_of_a_human_then_handoff_marker(chat: RestChat) -> None:
    assert chat.texts("zorp glib frum") == [say("utter_default")]
    offer = chat.say("qwerty uiop")
    assert [m.get("text") for m in offer] == [say("utter_offer_human")]
    assert [b["payload"] for b in offer[0]["buttons"]] == ["/affirm", "/deny"]
    handoff = chat.say("yes")
    assert [m.get("text") for m in handoff if "text" in m] == [say("utter_handoff")]
    assert [m["custom"] for m in handoff if "custom" in m] == [
        {"handoff": {"reason": "repeated_fallback"}}
    ]


def test_declining_the_offered_human(chat: RestChat) -> None:
    chat.say("zorp glib frum")
    chat.say("qwerty uiop")
    assert chat.texts("no") == [say("utter_human_declined")]
    # the offer is withdrawn: a later "yes" is not a request for a human
    assert chat.texts("yes") == [say("utter_affirm_ack")]


def test_asking_for_a_human_leaves_the_handoff_marker(chat: RestChat) -> None:
    messages = chat.say("I want to talk to a real person")
    assert [m.get("text") for m in messages if "text" in m] == [say("utter_handoff")]
    assert [m["custom"] for m in messages if "custom" in m] == [
        {"handoff": {"reason": "customer_request"}}
    ]


def test_asking_for_a_human_inside_a_form_ends_the_form(chat: RestChat) -> None:
    assert chat.texts("where is my parcel") == [say("utter_ask_order_id")]
    messages = chat.say("just get me a human agent")
    assert [m["custom"] for m in messages if "custom" in m] == [
        {"handoff": {"reason": "customer_request"}}
    ]
    assert chat.texts("hello") == [say("utter_greet")]


def test_no_inside_a_form_stops_it(chat: RestChat) -> None:
    assert chat.texts("I'd like a copy of my invoice") == [say("utter_ask_order_id")]
    assert chat.texts("no, never mind") == [say("utter_form_stopped")]


def test_invoice_and_refund_lookups(chat: RestChat) -> None:
    assert chat.texts("can you send me the invoice for order 100001") == [
        say("utter_invoice", invoice_id="INV-100001", order_id="100001",
            issued_on="November 2, 2026", amount="$84.50", vat="$14.08", payment_state="paid")
    ]
    assert chat.texts("what is the status of my refund for order 100004") == [
        say("utter_refund_status_approved", order_id="100004", amount="$15.00")
    ]


def test_policy_answers_come_from_the_domain(chat: RestChat) -> None:
    assert chat.texts("what is your return policy?") == [say("utter_refund_policy")]
    assert chat.texts("which payment methods do you accept") == [say("utter_payment_methods")]
