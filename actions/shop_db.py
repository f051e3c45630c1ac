"""The demo shop's database: customers, orders, shipments, invoices and refunds in SQLite.

Create and seed it with::

    python -m actions.shop_db seed            # (re)creates var/shop.db with the demo data
    python -m actions.shop_db seed --path X   # somewhere else

The action server finds it through the environment variable ``SHOP_DB_PATH`` (default
``var/shop.db`` under the project root). All SQL of the action server lives in this module.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DB_PATH = PROJECT_ROOT / "var" / "shop.db"

SCHEMA = """
CREATE TABLE customers (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    email       TEXT NOT NULL UNIQUE
);
CREATE TABLE orders (
    id               TEXT PRIMARY KEY,          -- 6 digits, as printed on the confirmation
    customer_id      INTEGER NOT NULL REFERENCES customers(id),
    placed_on        TEXT NOT NULL,             -- ISO date
    status           TEXT NOT NULL CHECK (status IN
                     ('processing', 'shipped', 'delivered', 'cancelled')),
    total_cents      INTEGER NOT NULL,
    shipping_address TEXT NOT NULL,
    items            TEXT NOT NULL
);
CREATE TABLE shipments (
    order_id        TEXT PRIMARY KEY REFERENCES orders(id),
    carrier         TEXT NOT NULL,
    tracking_number TEXT NOT NULL,
    shipped_on      TEXT NOT NULL,
    expected_on     TEXT NOT NULL,
    delivered_on    TEXT
);
CREATE TABLE invoices (
    id          TEXT PRIMARY KEY,
    order_id    TEXT NOT NULL UNIQUE REFERENCES orders(id),
    issued_on   TEXT NOT NULL,
    amount_cents INTEGER NOT NULL,
    vat_cents   INTEGER NOT NULL,
    paid        INTEGER NOT NULL
);
CREATE TABLE refunds (
    order_id     TEXT PRIMARY KEY REFERENCES orders(id),
    requested_on TEXT NOT NULL,
    amount_cents INTEGER NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('requested', 'approved', 'paid', 'rejected')),
    paid_on      TEXT,
    reason       TEXT NOT NULL
);
CREATE TABLE address_changes (
    id          INTEGER PRIMARY KEY,
    order_id    TEXT NOT NULL REFERENCES orders(id),
    old_address TEXT NOT NULL,
    new_address TEXT NOT NULL,
    changed_at  TEXT NOT NULL DEFAULT (datetime('now'))
);
"""

CUSTOMERS = [
    (1, "Jane Doe", "jane.doe@example.com"),
    (2, "Omar Haddad", "omar.haddad@example.org"),
    (3, "Mei Lin", "mei.lin@example.com"),
    (4, "Carlos Ruiz", "carlos.ruiz@example.net"),
]

# id, customer, placed_on, status, total, address, items
ORDERS = [
    ("100001", 1, "2026-11-02", "delivered", 8450, "12 Elm Street, 10115 Springfield", "1 x Espresso machine"),
    ("100002", 1, "2026-11-20", "shipped", 2999, "12 Elm Street, 10115 Springfield", "2 x Cotton bath towel"),
    ("100003", 2, "2026-11-26", "processing", 15900, "4 Harbour Road, 20457 Bayside", "1 x Noise-cancelling headphones"),
    ("100004", 2, "2026-11-10", "delivered", 4500, "4 Harbour Road, 20457 Bayside", "3 x Scented candle"),
    ("100005", 3, "2026-11-25", "processing", 7825, "88 Garden Lane, 30159 Riverton", "1 x Desk lamp, 1 x Notebook set"),
    ("100006", 3, "2026-10-28", "delivered", 12000, "88 Garden Lane, 30159 Riverton", "1 x Wool coat"),
    ("100007", 4, "2026-11-18", "cancelled", 5600, "7 Mill Court, 40210 Lakeside", "1 x Running shoes"),
    ("100008", 4, "2026-11-22", "shipped", 23950, "7 Mill Court, 40210 Lakeside", "1 x Robot vacuum"),
]

# order, carrier, tracking number, shipped_on, expected_on, delivered_on
SHIPMENTS = [
    ("100001", "UPS", "1Z999AA10123456784", "2026-11-03", "2026-11-06", "2026-11-05"),
    ("100002", "DHL", "JD014600006281234567", "2026-11-21", "2026-11-28", None),
    ("100004", "USPS", "9400100000000000000011", "2026-11-11", "2026-11-14", "2026-11-14"),
    ("100006", "UPS", "1Z999AA10123456799", "2026-10-29", "2026-11-02", "2026-11-01"),
    ("100008", "FedEx", "612999991234", "2026-11-23", "2026-11-30", None),
]

# order, requested_on, amount, status, paid_on, reason
REFUNDS = [
    ("100001", "2026-11-15", 8450, "paid", "2026-11-20", "defective item"),
    ("100004", "2026-11-24", 1500, "approved", None, "1 candle arrived broken"),
    ("100006", "2026-11-27", 12000, "requested", None, "wrong size"),
    ("100007", "2026-11-18", 5600, "paid", "2026-11-19", "order cancelled"),
]


@dataclass(frozen=True)
class Order:
    id: str
    customer_name: str
    placed_on: str
    status: str
    total_cents: int
    shipping_address: str
    items: str

    @property
    def can_be_changed(self) -> bool:
        """Only an order that has not left the warehouse can be cancelled or redirected."""
        return self.status == "processing"


@dataclass(frozen=True)
class Shipment:
    carrier: str
    tracking_number: str
    shipped_on: str
    expected_on: str
    delivered_on: Optional[str]


@dataclass(frozen=True)
class Invoice:
    id: str
    order_id: str
    issued_on: str
    amount_cents: int
    vat_cents: int
    paid: bool


@dataclass(frozen=True)
class Refund:
    order_id: str
    requested_on: str
    amount_cents: int
    status: str
    paid_on: Optional[str]
    reason: str


def money(cents: int) -> str:
    """Formats an amount in cents as the shop prints it: $84.50."""
    return f"${cents // 100:,}.{cents % 100:02d}"


class ShopDB:
    """The action server's access to the shop database (one short-lived connection per call)."""

    def __init__(self, path: Optional[os.PathLike[str] | str] = None) -> None:
        self.path = Path(path or os.environ.get("SHOP_DB_PATH") or DEFAULT_DB_PATH)

    def _connect(self) -> sqlite3.Connection:
        if not self.path.exists():
            raise FileNotFoundError(
                f"shop database {self.path} does not exist: run `python -m actions.shop_db seed`"
            )
        conn = sqlite3.connect(self.path, timeout=5)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def _one(self, sql: str, args: Sequence[object]) -> Optional[sqlite3.Row]:
        conn = self._connect()
        try:
            row: Optional[sqlite3.Row] = conn.execute(sql, args).fetchone()
            return row
        finally:
            conn.close()

    def order(self, order_id: str) -> Optional[Order]:
        row = self._one(
            "SELECT o.id, c.name AS customer_name, o.placed_on, o.status, o.total_cents,"
            " o.shipping_address, o.items"
            " FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id = ?",
            (order_id,),
        )
        return Order(**dict(row)) if row else None

    def shipment(self, order_id: str) -> Optional[Shipment]:
        row = self._one(
            "SELECT carrier, tracking_number, shipped_on, expected_on, delivered_on"
            " FROM shipments WHERE order_id = ?",
            (order_id,),
        )
        return Shipment(**dict(row)) if row else None

    def invoice(self, order_id: str) -> Optional[Invoice]:
        row = self._one(
            "SELECT id, order_id, issued_on, amount_cents, vat_cents, paid"
            " FROM invoices WHERE order_id = ?",
            (order_id,),
        )
        if not row:
            return None
        data = dict(row)
        data["paid"] = bool(data["paid"])
        return Invoice(**data)

    def refund(self, order_id: str) -> Optional[Refund]:
        row = self._one(
            "SELECT order_id, requested_on, amount_cents, status, paid_on, reason"
            " FROM refunds WHERE order_id = ?",
            (order_id,),
        )
        return Refund(**dict(row)) if row else None

    def cancel_order(self, order_id: str) -> bool:
        """Cancels a processing order; False when it was not (or no longer) cancellable."""
        conn = self._connect()
        try:
            with conn:
                cur = conn.execute(
                    "UPDATE orders SET status = 'cancelled' WHERE id = ? AND status = 'processing'",
                    (order_id,),
                )
                if cur.rowcount != 1:
                    return False
                conn.execute(
                    "INSERT INTO refunds (order_id, requested_on, amount_cents, status, reason)"
                    " SELECT id, date('now'), total_cents, 'approved', 'order cancelled'"
                    " FROM orders WHERE id = ?",
                    (order_id,),
                )
            return True
        finally:
            conn.close()

    def change_address(self, order_id: str, new_address: str) -> bool:
        """Redirects a processing order; False when it has already shipped or does not exist."""
        conn = self._connect()
        try:
            with conn:
                row = conn.execute(
                    "SELECT shipping_address FROM orders WHERE id = ? AND status = 'processing'",
                    (order_id,),
                ).fetchone()
                if row is None:
                    return False
                conn.execute(
                    "UPDATE orders SET shipping_address = ? WHERE id = ?", (new_address, order_id)
                )
                conn.execute(
                    "INSERT INTO address_changes (order_id, old_address, new_address)"
                    " VALUES (?, ?, ?)",
                    (order_id, row["shipping_address"], new_address),
                )
            return True
        finally:
            conn.close()


def _invoice_rows() -> Iterator[tuple[object, ...]]:
    for order_id, _customer, placed_on, status, total, _address, _items in ORDERS:
        vat = round(total - total / 1.2)
        yield (f"INV-{order_id}", order_id, placed_on, total, vat, int(status != "processing"))


def seed(path: os.PathLike[str] | str) -> Path:
    """(Re)creates the database at ``path`` with the demo data; returns the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.unlink(missing_ok=True)
    conn = sqlite3.connect(tmp)
    try:
        with conn:
            conn.executescript(SCHEMA)
            conn.executemany("INSERT INTO customers VALUES (?, ?, ?)", CUSTOMERS)
            conn.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?, ?)", ORDERS)
            conn.executemany("INSERT INTO shipments VALUES (?, ?, ?, ?, ?, ?)", SHIPMENTS)
            conn.executemany("INSERT INTO invoices VALUES (?, ?, ?, ?, ?, ?)", _invoice_rows())
            conn.executemany("INSERT INTO refunds VALUES (?, ?, ?, ?, ?, ?)", REFUNDS)
    finally:
        conn.close()
    os.replace(tmp, target)  # a running action server never sees a half-written database
    return target


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m actions.shop_db", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    seed_cmd = sub.add_parser("seed", help="create the database with the demo data (replaces it)")
    seed_cmd.add_argument("--path", default=os.environ.get("SHOP_DB_PATH") or DEFAULT_DB_PATH)
    seed_cmd.add_argument("--if-missing", action="store_true",
                          help="leave an existing database as it is")
    args = parser.parse_args(argv)
    if args.if_missing and Path(args.path).exists():
        print(f"shop database {args.path} exists; left as it is")
        return
    print(f"seeded shop database {seed(args.path)}")


if __name__ == "__main__":
    main()
