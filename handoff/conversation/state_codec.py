"""JSON (de)serialization of the router's dataclasses, for ``conversations.state``.

:func:`encode` turns a :class:`~handoff.conversation.router.ConversationState` (or any router dataclass,
event or effect) into plain JSON values; :func:`decode` rebuilds it from the annotations of
the dataclass, so a field added to the router needs no change here::

    data = encode(state)                         # dict of str/int/float/bool/None/list/dict
    assert decode(ConversationState, data) == state

Enums are stored by value, tuples and frozensets as lists (frozensets sorted), mappings as
objects. A value that does not fit its annotation raises :class:`StateDecodeError`.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any, Union, get_args, get_origin, get_type_hints

from handoff.conversation import router

__all__ = ["StateDecodeError", "decode", "decode_state", "encode", "encode_state"]



class StateDecodeError(ValueError):
    """Stored state does not match the router's dataclasses (e.g. written by another version)."""


def encode(value: Any) -> Any:
    """``value`` as JSON-ready data (dataclasses as objects with one key per field)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, frozenset | set):
        return sorted((encode(v) for v in value), key=repr)
    if isinstance(value, tuple | list):
        return [encode(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): encode(v) for k, v in value.items()}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


@functools.cache
def _hints(cls: Any) -> dict[str, Any]:
    return get_type_hints(cls, vars(router))


def decode(tp: Any, data: Any, where: str = "state") -> Any:
    """Rebuild a value of type ``tp`` from :func:`encode`'s output."""
    if tp is Any or tp is typing.Any:
        return data
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if data is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return decode(option, data, where)
            except StateDecodeError as exc:
                errors.append(str(exc))
        raise StateDecodeError("; ".join(errors) or f"{where}: unexpected None")
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(data, list):
            raise StateDecodeError(f"{where}: expected a list, got {type(data).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(decode(args[0], v, f"{where}[{i}]") for i, v in enumerate(data))
        return tuple(decode(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, data)))
    if origin in (frozenset, set):
        (arg,) = get_args(tp)
        if not isinstance(data, list):
            raise StateDecodeError(f"{where}: expected a list, got {type(data).__name__}")
        return frozenset(decode(arg, v, where) for v in data)
    if origin in (Mapping, dict) or tp in (Mapping, dict):
        if not isinstance(data, dict):
            raise StateDecodeError(f"{where}: expected an object, got {type(data).__name__}")
        return dict(data)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(data)
        except ValueError as exc:
            raise StateDecodeError(f"{where}: {exc}") from exc
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _decode_dataclass(tp, data, where)
    if tp is float:
        if isinstance(data, int | float) and not isinstance(data, bool):
            return float(data)
        raise StateDecodeError(f"{where}: expected a number, got {data!r}")
    if tp in (int, str, bool):
        if type(data) is tp:
            return data
        raise StateDecodeError(f"{where}: expected {tp.__name__}, got {data!r}")
    if tp is type(None):
        if data is None:
            return None
        raise StateDecodeError(f"{where}: expected null, got {data!r}")
    raise StateDecodeError(f"{where}: cannot decode type {tp!r}")


def _decode_dataclass(cls: Any, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise StateDecodeError(f"{where}: expected an object for {cls.__name__}")
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.name in data:
            kwargs[f.name] = decode(hints[f.name], data[f.name], f"{where}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise StateDecodeError(f"{where}: {cls.__name__} needs {f.name!r}")
    return cls(**kwargs)


def encode_state(state: router.ConversationState) -> dict[str, Any]:
    """The router state as the JSON object stored in ``conversations.state``."""
    data: dict[str, Any] = encode(state)
    return data


def decode_state(conversation_id: str, data: dict[str, Any] | None) -> router.ConversationState:
    """The stored router state, or a fresh one (bot mode) when nothing is stored yet."""
    if not data:
        return router.ConversationState(conversation_id=conversation_id)
    state: router.ConversationState = _decode_dataclass(router.ConversationState, data, "state")
    return state
