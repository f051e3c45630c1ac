"""Masking keeps each value's shape: order numbers stay order numbers the bot's own regexes
find, e-mails stay e-mails, phones stay phones, card numbers stay card-like but never valid.
``contracts.masking`` uses the standard library only, so it runs here directly."""

from __future__ import annotations

import re
from typing import Dict, List

import pytest
import yaml

from contracts.masking import Masker, luhn_valid, number_kind
from tests.conftest import PROJECT_ROOT

POOL_ORDERS = ["100008", "104233"]
POOL_EMAILS = ["sam@example.org"]


def project_regexes() -> Dict[str, re.Pattern[str]]:
    """The regexes of data/nlu/regex.yml, as the RegexEntityExtractor uses them (word
    boundaries, case-insensitive: config.yml)."""
    data = yaml.safe_load((PROJECT_ROOT / "data" / "nlu" / "regex.yml").read_text())
    found: Dict[str, re.Pattern[str]] = {}
    for item in data["nlu"]:
        if "regex" in item:
            [pattern] = [ln[2:] for ln in item["examples"].splitlines() if ln.startswith("- ")]
            found[item["regex"]] = re.compile(rf"\b{pattern}\b", re.IGNORECASE)
    return found


def digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def shape(text: str) -> str:
    return re.sub(r"\d", "9", text)


def masker() -> Masker:
    return Masker(POOL_ORDERS, POOL_EMAILS)


def test_a_six_digit_order_id_becomes_an_order_id_of_the_data_the_extractor_finds() -> None:
    masked = masker().mask("where is order 654321, it's late")
    assert masked == "where is order 104233, it's late"
    [found] = project_regexes()["order_id"].findall(masked)
    assert found in POOL_ORDERS
    assert masker().mask("where is order 100008") == "where is order 100008"  # from the data


@pytest.mark.parametrize("text, number", [
    ("modify purchase 1000081234", "1000081234"),  # the issue's: once a phone number
    ("my order number is 98765432101", "98765432101"),
    ("ref #7654321", "7654321"),
    ("order 100008123456789", "100008123456789"),  # 15 digits: once a card number
])
def test_a_long_order_number_stays_an_order_number_of_its_own_length(text: str,
                                                                      number: str) -> None:
    masked = masker().mask(text)
    new = masked[text.index(number):text.index(number) + len(number)]
    assert masked.replace(new, number) == text  # only the number changed
    assert new.isdigit() and len(new) == len(number) and new != number
    assert "+" not in masked and "555" not in masked
    # not 6 digits: no order id for the extractor, as before masking (the bot asks again)
    assert project_regexes()["order_id"].findall(masked) == []


def test_several_order_ids_in_a_row_are_masked_one_by_one() -> None:
    masked = masker().mask("orders 100008 654321 and 2 items")
    assert masked == "orders 100008 104233 and 2 items"
    assert masker().mask("order 654321 2 items") == "order 104233 2 items"


def test_an_email_stays_an_email_the_extractor_finds() -> None:
    masked = masker().mask("mail jane.doe@mail.com please")
    assert masked == "mail sam@example.org please"
    assert project_regexes()["email"].findall(masked) == ["sam@example.org"]


@pytest.mark.parametrize("text, number", [
    ("or call +44 7700 900123", "+44 7700 900123"),
    ("call me on 07700 900123", "07700 900123"),
    ("my number is (555) 123-4567", "(555) 123-4567"),
    ("phone 0171.555.1234", "0171.555.1234"),
    ("reach me at +1-202-555-0199 tonight", "+1-202-555-0199"),
])
def test_a_phone_number_keeps_its_shape_with_fictional_digits(text: str, number: str) -> None:
    masked = masker().mask(text)
    start = text.index(number)
    new = masked[start:start + len(number)]
    assert masked[:start] == text[:start] and masked[start + len(number):] == text[
        start + len(number):]
    assert shape(new) == shape(number) and new != number
    country = re.match(r"\+\d{1,3}(?=\D)", number)
    local = digits(new[len(country.group(0)):] if country else new)
    assert new.startswith(country.group(0)) if country else not new.startswith("+")
    assert local.startswith("55501"[:len(local)])  # the fictional 555-01xx range


@pytest.mark.parametrize("text, number", [
    ("card 4111 1111 1111 1111", "4111 1111 1111 1111"),
    ("my card 4111-1111-1111-1111 was charged twice", "4111-1111-1111-1111"),
    ("paid with 5500000000000004", "5500000000000004"),
    ("amex 3782 822463 10005", "3782 822463 10005"),
])
def test_a_card_number_stays_card_like_and_is_never_a_valid_card(text: str,
                                                                  number: str) -> None:
    assert luhn_valid(digits(number))  # the test numbers are valid card numbers
    masked = masker().mask(text)
    start = text.index(number)
    new = masked[start:start + len(number)]
    assert shape(new) == shape(number) and new != number
    assert not luhn_valid(digits(new))
    assert digits(number) not in digits(masked)


def test_dates_prices_and_small_numbers_are_left_alone() -> None:
    text = "delivered on 2026-11-26 or 26/11/2026, 3 items for $299.99, room 12345"
    assert masker().mask(text) == text


def test_the_same_value_is_masked_the_same_way_every_time() -> None:
    text = "order 1000081234, call +44 7700 900123, card 4111 1111 1111 1111"
    first, second = masker().mask(text), masker().mask(text)
    assert first == second
    one = masker()
    assert one.mask("purchase 1000081234")[9:] == one.mask("order 1000081234")[6:]


def test_the_nearest_word_says_what_a_number_is() -> None:
    text = "call me about order 1000081234"
    start = text.index("1000081234")
    assert number_kind(text, start, start + 10) == "order"
    text = "order came, call 1000081234"
    start = text.index("1000081234")
    assert number_kind(text, start, start + 10) == "phone"


def test_entities_are_masked_in_their_own_shape_and_moved() -> None:
    text = "where is order 1000081234? mail jane@x.io"
    entities: List[Dict[str, object]] = [
        {"start": 15, "end": 25, "value": "1000081234", "entity": "order_id"},
        {"start": 32, "end": 41, "value": "jane@x.io", "entity": "email"}]
    masked, moved = masker().mask_with_entities(text, entities)
    order, email = moved
    assert masked[order["start"]:order["end"]] == order["value"]
    assert len(str(order["value"])) == 10 and str(order["value"]).isdigit()
    assert masked[email["start"]:email["end"]] == email["value"] == "sam@example.org"
    # the slot an entity fills is masked to the same value
    one = masker()
    _, [entity] = one.mask_with_entities("order 654321", [
        {"start": 6, "end": 12, "value": "654321", "entity": "order_id"}])
    assert one.mask_value("order_id", "654321") == entity["value"] == "104233"
