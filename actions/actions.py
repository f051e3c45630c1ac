"""Custom actions of the Northwind Goods assistant (run with ``rasa run actions``).

Every reply is a response from ``domain.yml`` filled with values from the shop database, so the
shop's wording and policy stay in the domain where trainers can correct them.
"""

from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from datetime import date
from typing import Any, Dict, List, Optional, Text

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import ActiveLoop, EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.shop_db import Order, ShopDB, money

logger = logging.getLogger(__name__)

ORDER_ID_RE = re.compile(r"(?<!\d)(\d{6})(?!\d)")
# A delivery address needs a house number and a word of at least two letters besides it.
ADDRESS_RE = re.compile(r"(?=.*\d)(?=.*[A-Za-z]{2,}).{10,200}", re.DOTALL)

# The marker the handoff gateway acts on: a custom payload {"handoff": {"reason": ...}}.
HANDOFF_KEY = "handoff"
REASON_CUSTOMER_REQUEST = "customer_request"
REASON_REPEATED_FALLBACK = "repeated_fallback"

FALLBACKS_BEFORE_OFFERING_HUMAN = 2


def shop() -> ShopDB:
    """The shop database, located anew on each call so tests can point SHOP_DB_PATH elsewhere."""
    return ShopDB()


def human_date(iso: Optional[str]) -> str:
    if not iso:
        return "an unknown date"
    d = date.fromisoformat(iso)
    return f"{d:%B} {d.day}, {d.year}"


def parse_order_id(value: Any) -> Optional[str]:
    """The 6-digit order number in what the customer typed, or None."""
    if isinstance(value, list):
        value = value[-1] if value else None
    if value is None:
        return None
    match = ORDER_ID_RE.search(str(value))
    return match.group(1) if match else None


def current_order(tracker: Tracker) -> Optional[Order]:
    order_id = parse_order_id(tracker.get_slot("order_id"))
    return shop().order(order_id) if order_id else None


class OrderFormValidation(FormValidationAction, ABC):
    """Validation shared by every form that asks for an order number (abstract, so the action
    server does not register it)."""

    @abstractmethod
    def name(self) -> Text:
        """Each form's validation action names itself."""

    def validate_order_id(
        self,
        slot_value: Any,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: DomainDict,
    ) -> Dict[Text, Any]:
        order_id = parse_order_id(slot_value)
        if order_id is None:
            dispatcher.utter_message(response="utter_order_id_malformed")
            return {"order_id": None}
        if shop().order(order_id) is None:
            dispatcher.utter_message(response="utter_order_not_found", order_id=order_id)
            return {"order_id": None}
        return {"order_id": order_id}


class ValidateTrackOrderForm(OrderFormValidation):
    def name(self) -> Text:
        return "validate_track_order_form"


class ValidateRefundStatusForm(OrderFormValidation):
    def name(self) -> Text:
        return "validate_refund_status_form"


class ValidateInvoiceForm(OrderFormValidation):
    def name(self) -> Text:
        return "validate_invoice_form"


class ChangeableOrderFormValidation(OrderFormValidation):
    """A form that changes an order: once the order is known not to be changeable, it asks
    nothing more, and its submit action explains why."""

    async def required_slots(
        self,
        domain_slots: List[Text],
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: DomainDict,
    ) -> List[Text]:
        order = current_order(tracker)
        if order is not None and not order.can_be_changed:
            return ["order_id"]
        return domain_slots


class ValidateCancelOrderForm(ChangeableOrderFormValidation):
    def name(self) -> Text:
        return "validate_cancel_order_form"


class ValidateChangeAddressForm(ChangeableOrderFormValidation):
    def name(self) -> Text:
        return "validate_change_address_form"

    def validate_new_address(
        self,
        slot_value: Any,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: DomainDict,
    ) -> Dict[Text, Any]:
        address = " ".join(str(slot_value or "").split())
        if not ADDRESS_RE.fullmatch(address):
            dispatcher.utter_message(response="utter_address_invalid")
            return {"new_address": None}
        return {"new_address": address}


class ActionAskCancelConfirmed(Action):
    """Asks for confirmation, naming the order the customer is about to cancel."""

    def name(self) -> Text:
        return "action_ask_cancel_confirmed"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        order = current_order(tracker)
        if order is None:  # the form validated the number; only a vanished order lands here
            dispatcher.utter_message(response="utter_ask_order_id")
            return [SlotSet("order_id", None)]
        dispatcher.utter_message(
            response="utter_ask_cancel_confirmed",
            order_id=order.id,
            items=order.items,
            amount=money(order.total_cents),
        )
        return []


def order_not_changeable(dispatcher: CollectingDispatcher, order: Order, response: Text) -> None:
    if order.status == "cancelled":
        dispatcher.utter_message(response="utter_order_already_cancelled", order_id=order.id)
    else:
        dispatcher.utter_message(response=response, order_id=order.id)


class ActionTrackOrder(Action):
    def name(self) -> Text:
        return "action_track_order"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        order = current_order(tracker)
        if order is None:
            dispatcher.utter_message(response="utter_ask_order_id")
            return []
        common = {"order_id": order.id, "items": order.items}
        if order.status == "processing":
            dispatcher.utter_message(
                response="utter_order_status_processing",
                placed_on=human_date(order.placed_on),
                **common,
            )
        elif order.status == "cancelled":
            dispatcher.utter_message(response="utter_order_status_cancelled", **common)
        else:
            shipment = shop().shipment(order.id)
            if shipment is None:
                logger.error("order %s is %s but has no shipment", order.id, order.status)
                dispatcher.utter_message(
                    response="utter_order_status_processing",
                    placed_on=human_date(order.placed_on),
                    **common,
                )
            elif order.status == "delivered":
                dispatcher.utter_message(
                    response="utter_order_status_delivered",
                    delivered_on=human_date(shipment.delivered_on or shipment.expected_on),
                    **common,
                )
            else:
                dispatcher.utter_message(
                    response="utter_order_status_shipped",
                    shipped_on=human_date(shipment.shipped_on),
                    expected_on=human_date(shipment.expected_on),
                    carrier=shipment.carrier,
                    tracking_number=shipment.tracking_number,
                    **common,
                )
        return []


class ActionTrackRefund(Action):
    def name(self) -> Text:
        return "action_track_refund"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        order = current_order(tracker)
        if order is None:
            dispatcher.utter_message(response="utter_ask_order_id")
            return []
        refund = shop().refund(order.id)
        if refund is None:
            dispatcher.utter_message(response="utter_no_refund", order_id=order.id)
            return []
        dispatcher.utter_message(
            response=f"utter_refund_status_{refund.status}",
            order_id=order.id,
            amount=money(refund.amount_cents),
            requested_on=human_date(refund.requested_on),
            paid_on=human_date(refund.paid_on),
            reason=refund.reason,
        )
        return []


class ActionFindInvoice(Action):
    def name(self) -> Text:
        return "action_find_invoice"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        order = current_order(tracker)
        invoice = shop().invoice(order.id) if order else None
        if order is None or invoice is None:
            dispatcher.utter_message(
                response="utter_order_not_found",
                order_id=parse_order_id(tracker.get_slot("order_id")) or "you gave",
            )
            return []
        dispatcher.utter_message(
            response="utter_invoice",
            invoice_id=invoice.id,
            order_id=order.id,
            issued_on=human_date(invoice.issued_on),
            amount=money(invoice.amount_cents),
            vat=money(invoice.vat_cents),
            payment_state="paid" if invoice.paid else "to be paid when the order ships",
        )
        return []


class ActionCancelOrder(Action):
    def name(self) -> Text:
        return "action_cancel_order"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        events: List[EventType] = [SlotSet("cancel_confirmed", None)]
        order = current_order(tracker)
        if order is None:
            dispatcher.utter_message(response="utter_ask_order_id")
        elif not order.can_be_changed:
            order_not_changeable(dispatcher, order, "utter_cannot_cancel_shipped")
        elif tracker.get_slot("cancel_confirmed") is not True:
            dispatcher.utter_message(response="utter_cancel_kept", order_id=order.id)
        elif shop().cancel_order(order.id):
            dispatcher.utter_message(
                response="utter_order_cancelled",
                order_id=order.id,
                amount=money(order.total_cents),
            )
        else:  # shipped between the question and the answer
            dispatcher.utter_message(response="utter_cannot_cancel_shipped", order_id=order.id)
        return events


class ActionChangeAddress(Action):
    def name(self) -> Text:
        return "action_change_address"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        events: List[EventType] = [SlotSet("new_address", None)]
        order = current_order(tracker)
        new_address = tracker.get_slot("new_address")
        if order is None:
            dispatcher.utter_message(response="utter_ask_order_id")
        elif not order.can_be_changed or not new_address:
            order_not_changeable(dispatcher, order, "utter_cannot_change_address")
        elif shop().change_address(order.id, new_address):
            dispatcher.utter_message(
                response="utter_address_changed", order_id=order.id, new_address=new_address
            )
        else:
            dispatcher.utter_message(response="utter_cannot_change_address", order_id=order.id)
        return events


class ActionRequestHuman(Action):
    """The one action that hands a conversation to a person.

    Besides telling the customer, it sends the machine-readable marker
    ``{"handoff": {"reason": ...}}`` as a custom payload; the handoff gateway acts on it.
    It also ends any form in progress.
    """

    def name(self) -> Text:
        return "action_request_human"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        offered = tracker.get_slot("human_offered") is True
        intent = (tracker.latest_message.get("intent") or {}).get("name")
        reason = (
            REASON_REPEATED_FALLBACK
            if offered and intent == "affirm"
            else REASON_CUSTOMER_REQUEST
        )
        dispatcher.utter_message(response="utter_handoff")
        dispatcher.utter_message(json_message={HANDOFF_KEY: {"reason": reason}})
        events: List[EventType] = [SlotSet("human_offered", False), SlotSet("fallback_count", 0)]
        if tracker.active_loop_name:
            events += [ActiveLoop(None), SlotSet("requested_slot", None)]
        return events


class ActionHandleFallback(Action):
    """Asks the customer to rephrase; after repeated misunderstandings offers a human."""

    def name(self) -> Text:
        return "action_handle_fallback"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        count = int(tracker.get_slot("fallback_count") or 0) + 1
        if count >= FALLBACKS_BEFORE_OFFERING_HUMAN:
            dispatcher.utter_message(response="utter_offer_human")
            return [SlotSet("fallback_count", 0), SlotSet("human_offered", True)]
        dispatcher.utter_message(response="utter_default")
        return [SlotSet("fallback_count", count), SlotSet("human_offered", False)]


class ActionDeny(Action):
    """A "no": stops a form in progress, declines an offered human, or just acknowledges."""

    def name(self) -> Text:
        return "action_deny"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> List[EventType]:
        if tracker.active_loop_name:
            dispatcher.utter_message(response="utter_form_stopped")
            return [ActiveLoop(None), SlotSet("requested_slot", None)]
        if tracker.get_slot("human_offered") is True:
            dispatcher.utter_message(response="utter_human_declined")
            return [SlotSet("human_offered", False)]
        dispatcher.utter_message(response="utter_deny_ack")
        return []
