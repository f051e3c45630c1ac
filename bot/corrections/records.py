"""Correction records as the writer reads them: the contract's, in
``contracts/correction_record.py``, which the gateway checks its export against too.

The gateway (``handoff/``) stores every agent decision as a row of its ``corrections`` table
(docs/store.md) and exports the accepted ones; :func:`parse_records` turns the export into
:class:`Correction` records and says clearly what is wrong with one it cannot use.
"""

from __future__ import annotations

from contracts.correction_record import (
    AGENT_REPLY_ACTION,
    Correction,
    RecordError,
    Snapshot,
    correction_name,
    parse_record,
    parse_records,
)

__all__ = ["AGENT_REPLY_ACTION", "Correction", "RecordError", "Snapshot", "correction_name",
           "parse_record", "parse_records"]
