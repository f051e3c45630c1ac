"""Users, passwords and tokens of the agent console.

Each user has a certification tier (``trainee``, ``agent``, ``reviewer``, ``trainer``, ``lead``,
``admin``); what a tier may do is :mod:`handoff.web.rights`. Passwords are hashed with argon2id
(argon2-cffi); the store keeps only the hash. Tokens are JWTs (HS256) carrying the username
(``sub``), the user's token version (``ver``), ``iat`` and ``exp``; the tier is read from the
store on every use, and a token whose version is no longer the user's (logout, disabled,
password reset) is refused (:func:`user_from_token`).

    user = await authenticate(store, "alice", password)        # InvalidCredentials / UserDisabled
    token = issue_token(user.username, user.token_version, secret=secret)
    claims = verify_token(token, secret=secret)                # TokenExpired / TokenInvalid

Command line, on the gateway's database (``--url``, else ``$HANDOFF_DATABASE_URL`` or its value
in ``.env``, else the gateway's default ``var/handoff.db``); the password from a prompt, or
the first line of standard input with ``--password-stdin``::

    python -m handoff.web.auth create-user --username U --tier agent
    python -m handoff.web.auth set-password --username admin
    python -m handoff.web.auth list-users
    python -m handoff.web.auth set-tier --username U --tier trainee --reason "why"
    python -m handoff.web.auth disable --username U --reason "why"     # enable: the same
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import getpass
import os
import re
import secrets
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Final

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from handoff.errors import BadRequest, Forbidden, HandoffError, NotFound, Unauthorized
from handoff.settings import Settings, read_env_file, resolve_database_url
from handoff.store import AlreadyExists, Store
from handoff.store.records import ROLES, Role, User

__all__ = [
    "ROLES", "DEFAULT_TOKEN_TTL", "InvalidCredentials", "TokenClaims", "TokenExpired",
    "TokenInvalid", "TokenRevoked", "UserDisabled", "authenticate", "change_password",
    "check_username", "create_user", "ensure_first_admin", "hash_password", "issue_token",
    "new_secret", "user_from_token", "user_of_claims", "verify_password", "verify_token",
]

DEFAULT_TOKEN_TTL: Final = timedelta(hours=12)
ALGORITHM: Final = "HS256"
ISSUER: Final = "handoff"
MIN_SECRET_BYTES: Final = 32
MIN_PASSWORD_LENGTH: Final = 8
FIRST_ADMIN: Final = "admin"
CLI_ACTOR: Final = "cli"  # the audit log's actor for the command line
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")

_hasher = PasswordHasher()  # argon2id with argon2-cffi's recommended (RFC 9106 low-memory) cost


@functools.cache
def _dummy_hash() -> str:
    # Checked against for an unknown username, so the answer takes as long as for a known one.
    return _hasher.hash(secrets.token_urlsafe(16))


class InvalidCredentials(Unauthorized):
    """Unknown username or wrong password (deliberately not saying which)."""

    code = "invalid_credentials"


class UserDisabled(Forbidden):
    """The password was right but the account is disabled."""

    code = "user_disabled"


class TokenExpired(Unauthorized):
    """The token was valid but its ``exp`` has passed: log in again."""

    code = "token_expired"


class TokenInvalid(Unauthorized):
    """The token is malformed, not signed with our secret, or lacks a required claim."""

    code = "token_invalid"


class TokenRevoked(Unauthorized):
    """The token was ended on the server (logout, disabled account, password reset)."""

    code = "token_revoked"


@dataclass(frozen=True, slots=True)
class TokenClaims:
    username: str
    version: int
    issued_at: datetime
    expires_at: datetime


# --------------------------------------------------------------------------- passwords


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise BadRequest(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")


async def hash_password(password: str) -> str:
    """The argon2id hash of ``password`` (computed off the event loop)."""
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(password_hash: str, password: str) -> bool:
    """Whether ``password`` matches ``password_hash``; False for a malformed hash."""

    def check() -> bool:
        try:
            return _hasher.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(check)


# --------------------------------------------------------------------------- users


def check_username(username: object) -> str:
    """``username`` if it is a valid one, else ``BadRequest``."""
    if not isinstance(username, str) or not _USERNAME.match(username):
        raise BadRequest(
            "a username is 1-64 letters, digits or . _ @ - and starts with a letter or digit"
        )
    return username


async def create_user(store: Store, username: str, password: str, tier: Role) -> User:
    """Create a user with an argon2 hash of ``password``. ``BadRequest`` for a bad username,
    tier or a password shorter than 8 characters; ``AlreadyExists`` (409) if taken."""
    check_username(username)
    if tier not in ROLES:
        raise BadRequest(f"tier must be one of {', '.join(ROLES)}; got {tier!r}")
    _check_password(password)
    return await store.create_user(username, password_hash=await hash_password(password), tier=tier)


async def authenticate(store: Store, username: str, password: str) -> User:
    """The user if ``password`` is right. ``InvalidCredentials`` (401) for an unknown user or
    a wrong password, ``UserDisabled`` (403) for a disabled account. An outdated hash (older
    argon2 parameters) is replaced on success."""
    try:
        user = await store.get_user(username)
    except NotFound:
        await verify_password(_dummy_hash(), password)
        raise InvalidCredentials("wrong username or password") from None
    if not await verify_password(user.password_hash, password):
        raise InvalidCredentials("wrong username or password")
    if user.disabled:
        raise UserDisabled(f"user {username!r} is disabled", username=username)
    if _hasher.check_needs_rehash(user.password_hash):
        user = await store.update_user(username, password_hash=await hash_password(password))
    return user


async def change_password(store: Store, username: str, password: str) -> User:
    """Set a new password and end the user's tokens; ``NotFound`` if there is no such user."""
    _check_password(password)
    return await store.update_user(username, password_hash=await hash_password(password),
                                   bump_token_version=True)


async def ensure_first_admin(store: Store, *, username: str = FIRST_ADMIN) -> str | None:
    """When the store has no user at all, create ``admin`` with a random password and return
    that password (show it once, e.g. in the start-up log); otherwise return None."""
    if await store.count_users():
        return None
    password = secrets.token_urlsafe(18)
    created = await store.create_first_user(
        username, password_hash=await hash_password(password), tier="admin"
    )
    return password if created is not None else None


# --------------------------------------------------------------------------- tokens


def new_secret() -> str:
    """A fresh random token secret (43 URL-safe characters)."""
    return secrets.token_urlsafe(MIN_SECRET_BYTES)


def _key(secret: str) -> bytes:
    key = secret.encode()
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"the token secret needs at least {MIN_SECRET_BYTES} bytes")
    return key


def issue_token(
    username: str,
    version: int = 0,
    *,
    secret: str,
    ttl: timedelta = DEFAULT_TOKEN_TTL,
    now: datetime | None = None,
) -> str:
    """A signed token for ``username`` under the user's token ``version`` that expires ``ttl``
    (whole seconds, at least one) after ``now`` (default: the current time; both rounded down
    to the second)."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError(f"a token version is an integer from 0; got {version!r}")
    if ttl < timedelta(seconds=1):
        raise ValueError("a token needs a ttl of at least one second")
    issued_at = int((now or datetime.now(timezone.utc)).timestamp())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": username,
        "ver": version,
        "iat": issued_at,
        "exp": issued_at + int(ttl.total_seconds()),
    }
    return jwt.encode(claims, _key(secret), algorithm=ALGORITHM)


def verify_token(
    token: str, *, secret: str, now: datetime | None = None, leeway: timedelta = timedelta(0)
) -> TokenClaims:
    """The claims of a token we issued. ``TokenExpired`` once ``exp`` is reached (give or take
    ``leeway``), ``TokenInvalid`` for anything else wrong with it (both 401)."""
    try:
        claims = jwt.decode(
            token,
            _key(secret),
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "iss"], "verify_exp": False,
                     "verify_iat": False},
        )
    except jwt.InvalidTokenError as exc:
        raise TokenInvalid(f"invalid token: {exc}") from exc
    username, version, iat, exp = (claims.get(k) for k in ("sub", "ver", "iat", "exp"))
    if not isinstance(username, str) or isinstance(version, bool) or not isinstance(
            version, int):
        raise TokenInvalid("invalid token: bad subject or version")
    if not isinstance(iat, int) or not isinstance(exp, int):
        raise TokenInvalid("invalid token: iat and exp must be integers")
    current = (now or datetime.now(timezone.utc)).timestamp()
    if current >= exp + leeway.total_seconds():
        raise TokenExpired("the token has expired; log in again")
    return TokenClaims(
        username=username,
        version=version,
        issued_at=datetime.fromtimestamp(iat, timezone.utc),
        expires_at=datetime.fromtimestamp(exp, timezone.utc),
    )


async def user_from_token(store: Store, token: str, *, secret: str) -> User:
    """Verify the token and load its user as it is now (the current tier, so that a tier change
    takes effect at once): ``TokenInvalid`` if the user no longer exists, ``TokenRevoked`` if
    the user's token version moved on since, ``UserDisabled`` if disabled since."""
    claims = verify_token(token, secret=secret)
    try:
        user = await store.get_user(claims.username)
    except NotFound:
        raise TokenInvalid("invalid token: the user no longer exists") from None
    return user_of_claims(claims, user)


def user_of_claims(claims: TokenClaims, user: User | None) -> User:
    """``user``, read from the store for a token with ``claims``, if the login still holds:
    ``TokenInvalid`` if the user no longer exists (None), ``TokenRevoked`` if the user's token
    version moved on since, ``UserDisabled`` if disabled since."""
    if user is None:
        raise TokenInvalid("invalid token: the user no longer exists")
    if user.disabled:
        raise UserDisabled(f"user {user.username!r} is disabled", username=user.username)
    if claims.version != user.token_version:
        raise TokenRevoked("this login has ended (logged out, or the password was reset); "
                           "log in again")
    return user


# --------------------------------------------------------------------------- command line


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Repeat password: ") != first:
        raise BadRequest("the passwords differ")
    return first


def gateway_database_url(environ: Mapping[str, str] | None = None) -> str:
    """The database the gateway uses when started here: ``$HANDOFF_DATABASE_URL``, else its
    value in the ``.env`` file (``$HANDOFF_ENV_FILE``), else the setting's default."""
    env = os.environ if environ is None else environ
    file_values = read_env_file(Path(env.get("HANDOFF_ENV_FILE", ".env")))
    url = env.get("HANDOFF_DATABASE_URL") or file_values.get("HANDOFF_DATABASE_URL")
    return resolve_database_url(url or Settings.database_url)


async def _create_user(url: str, username: str, password: str, role: Role) -> User:
    async with Store(url) as store:
        await store.migrate()
        return await create_user(store, username, password, role)


async def _set_password(url: str, username: str, password: str) -> User:
    async with Store(url) as store:
        await store.migrate()
        user = await change_password(store, username, password)
        await store.audit(username, "password_set", target=f"user:{username}",
                          details={"via": "cli"})
        return user


async def _manage(url: str, command: str, username: str | None, tier: str | None,
                  reason: str) -> list[User]:
    from handoff.web.login_limits import LoginLimits  # it imports the store only
    from handoff.web.users import UserAdmin  # users imports this module

    async with Store(url) as store:
        await store.migrate()
        if command == "list-users":
            return await store.list_users(limit=None)
        assert username is not None
        if command == "unlock":  # the limits are in the store: every node sees the unlock
            user = await store.get_user(username)  # NotFound for an unknown name
            unlocked = await LoginLimits(store).unlock(username)
            await store.audit(CLI_ACTOR, "login_unlocked", target=f"user:{username}",
                              details={"reason": reason, "unlocked": unlocked, "via": "cli"})
            return [user]
        admin = UserAdmin(store)  # no sockets here: the gateway refuses old tokens itself
        if command == "set-tier":
            assert tier is not None
            return [await admin.set_tier(CLI_ACTOR, username, tier, reason)]
        return [await admin.set_disabled(CLI_ACTOR, username, command == "disable", reason)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m handoff.web.auth", description="Manage the console's users."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create-user", help="create a user (migrates the database first)")
    password = sub.add_parser("set-password", help="set a user's new password (the first "
                              "admin's, printed once at the gateway's first start, too)")
    for command in (create, password):
        command.add_argument(
            "--url", default=None,
            help="database URL (default: $HANDOFF_DATABASE_URL, else the gateway's default)",
        )
        command.add_argument("--username", required=True)
        command.add_argument(
            "--password-stdin", action="store_true",
            help="read the password from the first line of standard input instead of a prompt",
        )
    create.add_argument("--tier", "--role", dest="tier", required=True, choices=ROLES,
                        help="the certification tier (--role: its old name)")
    listing = sub.add_parser("list-users", help="list the users, their tiers and status")
    set_tier = sub.add_parser("set-tier", help="give a user another tier (audit-logged)")
    disable = sub.add_parser("disable", help="disable a user: their tokens end (audit-logged)")
    enable = sub.add_parser("enable", help="re-enable a disabled user (audit-logged)")
    unlock = sub.add_parser("unlock", help="lift the failed-login back-off and lockout on a "
                            "username (audit-logged)")
    for command in (listing, set_tier, disable, enable, unlock):
        command.add_argument("--url", default=None, help="database URL (default: the "
                             "gateway's, from $HANDOFF_DATABASE_URL or .env)")
    for command in (set_tier, disable, enable, unlock):
        command.add_argument("--username", required=True)
        command.add_argument("--reason", required=True, help="why (kept in the audit log)")
    set_tier.add_argument("--tier", required=True, choices=ROLES)
    args = parser.parse_args(argv)
    url = args.url or gateway_database_url()
    if args.command in ("list-users", "set-tier", "disable", "enable", "unlock"):
        try:
            users = asyncio.run(_manage(url, args.command, getattr(args, "username", None),
                                        getattr(args, "tier", None),
                                        getattr(args, "reason", "")))
        except NotFound:
            print(f"error: no user {args.username!r}", file=sys.stderr)
            return 1
        except (HandoffError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        for user in users:
            print(f"{user.username}\t{user.tier}\t{'disabled' if user.disabled else 'active'}")
        return 0
    try:
        secret = _read_password(args.password_stdin)
        if args.command == "set-password":
            user = asyncio.run(_set_password(url, args.username, secret))
            print(f"new password set for {user.username} ({user.tier})")
            return 0
        user = asyncio.run(_create_user(url, args.username, secret, args.tier))
    except AlreadyExists:
        print(f"error: user {args.username!r} exists", file=sys.stderr)
        return 1
    except NotFound:
        print(f"error: no user {args.username!r}", file=sys.stderr)
        return 1
    except (HandoffError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"created user {user.username} ({user.tier})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
