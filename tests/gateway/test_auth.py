"""handoff.web.auth: users, tiers and tokens, on SQLite and PostgreSQL (see test_store.py)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from unittest import mock

import jwt
import pytest
from argon2 import PasswordHasher

from handoff.web.auth import main as cli_main
from handoff.web.auth import (
    InvalidCredentials,
    TokenClaims,
    TokenExpired,
    TokenInvalid,
    TokenRevoked,
    UserDisabled,
    authenticate,
    change_password,
    create_user,
    ensure_first_admin,
    gateway_database_url,
    issue_token,
    new_secret,
    user_from_token,
    verify_token,
)
from handoff.errors import BadRequest, Forbidden, NotFound, Unauthorized
from handoff.store import AlreadyExists, Store, User
from handoff.web.login_limits import LoginLimits, TooManyAttempts
from handoff.web.rights import RIGHTS, has_right, require_right, rights_of

pytestmark = pytest.mark.asyncio

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SECRET = "s" * 40
PASSWORD = "correct horse battery"


# --------------------------------------------------------------------------- users


async def test_password_is_stored_as_argon2_hash(store: Store) -> None:
    user = await create_user(store, "alice", PASSWORD, "agent")
    stored = await store.get_user("alice")
    assert stored == user
    assert stored.password_hash.startswith("$argon2id$")
    assert PASSWORD not in stored.password_hash
    assert PasswordHasher().verify(stored.password_hash, PASSWORD)
    assert (user.username, user.tier, user.disabled) == ("alice", "agent", False)


async def test_authenticate(store: Store) -> None:
    await create_user(store, "alice", PASSWORD, "trainer")
    user = await authenticate(store, "alice", PASSWORD)
    assert (user.username, user.tier) == ("alice", "trainer")


async def test_wrong_password_and_unknown_user_are_rejected_alike(store: Store) -> None:
    await create_user(store, "alice", PASSWORD, "agent")
    with pytest.raises(InvalidCredentials) as wrong:
        await authenticate(store, "alice", PASSWORD + "!")
    with pytest.raises(InvalidCredentials) as unknown:
        await authenticate(store, "mallory", PASSWORD)
    assert wrong.value.to_dict() == unknown.value.to_dict() == {
        "error": "invalid_credentials", "message": "wrong username or password"
    }
    assert isinstance(wrong.value, Unauthorized) and wrong.value.status == 401


async def test_disabled_user_is_rejected(store: Store) -> None:
    await create_user(store, "alice", PASSWORD, "agent")
    await store.update_user("alice", disabled=True)
    with pytest.raises(UserDisabled) as err:
        await authenticate(store, "alice", PASSWORD)
    assert isinstance(err.value, Forbidden) and err.value.status == 403
    # A wrong password for a disabled account says nothing about the account.
    with pytest.raises(InvalidCredentials):
        await authenticate(store, "alice", "wrong password")


async def test_create_user_validates(store: Store) -> None:
    with pytest.raises(BadRequest, match="8 characters"):
        await create_user(store, "alice", "short", "agent")
    for bad_name in ("", "-alice", "al ice", "a" * 65):
        with pytest.raises(BadRequest, match="username"):
            await create_user(store, bad_name, PASSWORD, "agent")
    with pytest.raises(BadRequest, match="tier"):
        await create_user(store, "alice", PASSWORD, "boss")  # type: ignore[arg-type]
    await create_user(store, "alice", PASSWORD, "agent")
    with pytest.raises(AlreadyExists):
        await create_user(store, "alice", PASSWORD, "admin")
    assert await store.count_users() == 1


async def test_change_password(store: Store) -> None:
    await create_user(store, "alice", PASSWORD, "agent")
    await change_password(store, "alice", "a new password")
    with pytest.raises(InvalidCredentials):
        await authenticate(store, "alice", PASSWORD)
    assert (await authenticate(store, "alice", "a new password")).username == "alice"
    with pytest.raises(NotFound):
        await change_password(store, "nobody", "a new password")
    with pytest.raises(BadRequest):
        await change_password(store, "alice", "short")


async def test_outdated_hash_is_upgraded_on_login(store: Store) -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PASSWORD)
    await store.create_user("alice", password_hash=weak, tier="agent")
    user = await authenticate(store, "alice", PASSWORD)
    assert user.password_hash != weak
    assert not PasswordHasher().check_needs_rehash(user.password_hash)
    assert (await store.get_user("alice")).password_hash == user.password_hash


async def test_malformed_stored_hash_rejects(store: Store) -> None:
    await store.create_user("alice", password_hash="not-a-hash", tier="agent")
    with pytest.raises(InvalidCredentials):
        await authenticate(store, "alice", PASSWORD)


async def test_first_admin_is_created_only_once(store: Store) -> None:
    password = await ensure_first_admin(store)
    assert password is not None and len(password) >= 20
    admin = await authenticate(store, "admin", password)
    assert admin.tier == "admin"
    assert await ensure_first_admin(store) is None
    assert await store.count_users() == 1 and (await store.get_user("admin")).tier == "admin"


async def test_first_admin_concurrently(store: Store) -> None:
    passwords = await asyncio.gather(*(ensure_first_admin(store) for _ in range(4)))
    created = [p for p in passwords if p is not None]
    assert len(created) == 1
    assert (await authenticate(store, "admin", created[0])).tier == "admin"


async def test_no_first_admin_when_users_exist(store: Store) -> None:
    await create_user(store, "alice", PASSWORD, "agent")
    assert await ensure_first_admin(store) is None
    assert await store.count_users() == 1 and (await store.get_user("alice")).tier == "agent"


async def test_rights_of_tiers() -> None:
    assert rights_of("trainee") == {"watch", "approve", "whisper"}
    assert rights_of("visitor") == frozenset()
    assert rights_of("admin") == set(RIGHTS)
    now = datetime.now(timezone.utc)
    user = User("a", "h", "agent", now, False)
    require_right(user, "edit")
    with pytest.raises(Forbidden) as err:
        require_right(user, "deploy")
    assert err.value.details == {"right": "deploy"}
    assert not has_right(User("a", "h", "admin", now, True), "watch")


# --------------------------------------------------------------------------- tokens


async def test_token_carries_username_and_version() -> None:
    now = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    token = issue_token("alice", 3, secret=SECRET, ttl=timedelta(hours=1), now=now)
    raw = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_exp": False, "verify_iat": False})
    assert raw == {"iss": "handoff", "sub": "alice", "ver": 3,
                   "iat": int(now.timestamp()), "exp": int(now.timestamp()) + 3600}
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = verify_token(token, secret=SECRET, now=now + timedelta(minutes=59))
    assert claims == TokenClaims(username="alice", version=3, issued_at=now,
                                 expires_at=now + timedelta(hours=1))


async def test_token_expires() -> None:
    issued = datetime.now(timezone.utc)
    token = issue_token("alice", 0, secret=SECRET, ttl=timedelta(seconds=1), now=issued)
    assert verify_token(token, secret=SECRET, now=issued).username == "alice"
    await asyncio.sleep(1.1)  # now on the real clock, past exp
    with pytest.raises(TokenExpired) as err:
        verify_token(token, secret=SECRET)
    assert isinstance(err.value, Unauthorized) and err.value.status == 401
    assert err.value.code == "token_expired"
    # With a leeway the same token is still accepted.
    assert verify_token(token, secret=SECRET, leeway=timedelta(minutes=1)).version == 0


async def test_token_expiry_with_a_given_clock() -> None:
    now = datetime(2030, 1, 1, tzinfo=timezone.utc)
    token = issue_token("alice", 0, secret=SECRET, ttl=timedelta(minutes=5), now=now)
    verify_token(token, secret=SECRET, now=now + timedelta(minutes=4, seconds=59))
    with pytest.raises(TokenExpired):
        verify_token(token, secret=SECRET, now=now + timedelta(minutes=5))


async def test_invalid_tokens() -> None:
    token = issue_token("alice", 0, secret=SECRET)
    other_secret = "t" * 40
    header, payload, signature = token.split(".")
    forged_payload = jwt.encode({"iss": "handoff", "sub": "alice", "ver": 0, "iat": 1,
                                 "exp": 4102444800}, other_secret, algorithm="HS256").split(".")[1]
    unsigned = jwt.encode({"iss": "handoff", "sub": "alice", "ver": 0, "iat": 1,
                           "exp": 4102444800}, None, algorithm="none")
    no_role = jwt.encode({"iss": "handoff", "sub": "alice", "ver": "1", "iat": 1, "exp": 4102444800},
                         SECRET, algorithm="HS256")
    other_issuer = jwt.encode({"iss": "else", "sub": "alice", "ver": 0, "iat": 1,
                               "exp": 4102444800}, SECRET, algorithm="HS256")
    no_exp = jwt.encode({"iss": "handoff", "sub": "alice", "ver": 0, "iat": 1},
                        SECRET, algorithm="HS256")
    for bad in ("", "garbage", f"{header}.{forged_payload}.{signature}", unsigned, no_role,
                other_issuer, no_exp):
        with pytest.raises(TokenInvalid) as err:
            verify_token(bad, secret=SECRET)
        assert err.value.status == 401 and err.value.code == "token_invalid"
    with pytest.raises(TokenInvalid):
        verify_token(token, secret=other_secret)


async def test_token_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        issue_token("alice", 0, secret="short")
    with pytest.raises(ValueError, match="32 bytes"):
        verify_token("x.y.z", secret="short")
    with pytest.raises(ValueError, match="version"):
        issue_token("alice", -1, secret=SECRET)
    with pytest.raises(ValueError, match="ttl"):
        issue_token("alice", 0, secret=SECRET, ttl=timedelta(milliseconds=999))
    assert len(new_secret()) >= 32 and new_secret() != new_secret()


async def test_user_from_token(store: Store) -> None:
    await create_user(store, "alice", PASSWORD, "agent")
    token = issue_token("alice", 0, secret=SECRET)
    assert (await user_from_token(store, token, secret=SECRET)).tier == "agent"
    await store.update_user("alice", tier="trainee")  # the tier the user has now
    assert (await user_from_token(store, token, secret=SECRET)).tier == "trainee"
    await store.update_user("alice", bump_token_version=True)
    with pytest.raises(TokenRevoked) as revoked:
        await user_from_token(store, token, secret=SECRET)
    assert revoked.value.status == 401 and revoked.value.code == "token_revoked"
    token = issue_token("alice", 1, secret=SECRET)
    assert (await user_from_token(store, token, secret=SECRET)).token_version == 1
    await store.update_user("alice", disabled=True)
    with pytest.raises(UserDisabled):
        await user_from_token(store, token, secret=SECRET)
    with pytest.raises(TokenInvalid):
        await user_from_token(store, issue_token("ghost", 0, secret=SECRET), secret=SECRET)


# --------------------------------------------------------------------------- command line


def _process(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """``python -m handoff.web.auth`` as an admin runs it, in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "handoff.web.auth", *args], input=stdin, cwd=PROJECT_ROOT,
        capture_output=True, text=True, timeout=120,
    )


def _cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """The same command's ``main`` in this process (on the thread it is called on), with its
    own stdin, stdout and stderr: no Python start-up per call. ``test_create_user_cli`` runs
    it as a process too, so the entry point is covered."""
    out, err = io.StringIO(), io.StringIO()
    with mock.patch.object(sys, "stdin", io.StringIO(stdin)), \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli_main(list(args))
        except SystemExit as exc:  # argparse refusing the arguments
            code = exc.code if isinstance(exc.code, int) else 1
    return subprocess.CompletedProcess(["handoff.web.auth", *args], code, out.getvalue(),
                                       err.getvalue())


async def test_create_user_cli(store: Store, store_url: str) -> None:
    args = ("create-user", "--url", store_url, "--username", "carol", "--role", "trainer",
            "--password-stdin")
    done = await asyncio.to_thread(_process, *args, stdin=PASSWORD + "\n")
    assert (done.returncode, done.stdout, done.stderr) == (0, "created user carol (trainer)\n", "")
    assert (await authenticate(store, "carol", PASSWORD)).tier == "trainer"
    again = await asyncio.to_thread(_cli, *args, stdin=PASSWORD + "\n")
    assert (again.returncode, again.stderr) == (1, "error: user 'carol' exists\n")
    short = await asyncio.to_thread(
        _cli, "create-user", "--url", store_url, "--username", "dave", "--role", "agent",
        "--password-stdin", stdin="short\n",
    )
    assert (short.returncode, short.stderr) == (
        1, "error: a password needs at least 8 characters\n"
    )
    bad_role = await asyncio.to_thread(
        _cli, "create-user", "--url", store_url, "--username", "dave", "--role", "boss",
        "--password-stdin",
    )
    assert bad_role.returncode == 2 and "invalid choice" in bad_role.stderr


async def test_set_password_cli(store: Store, store_url: str) -> None:
    """What the gateway's start-up message tells the admin to run really changes the
    password (and is audit-logged); an unknown user or a short password changes nothing."""
    await create_user(store, "admin", PASSWORD, "admin")
    new = "a-new-password-for-the-admin"
    args = ("set-password", "--url", store_url, "--username", "admin", "--password-stdin")
    done = await asyncio.to_thread(_cli, *args, stdin=new + "\n")
    assert (done.returncode, done.stdout, done.stderr) == (
        0, "new password set for admin (admin)\n", "")
    assert (await authenticate(store, "admin", new)).username == "admin"
    with pytest.raises(InvalidCredentials):
        await authenticate(store, "admin", PASSWORD)
    assert [(e.actor, e.action, e.target) for e in await store.list_audit(actor="admin")] == [
        ("admin", "password_set", "user:admin")]
    ghost = await asyncio.to_thread(
        _cli, "set-password", "--url", store_url, "--username", "ghost", "--password-stdin",
        stdin=new + "\n")
    assert (ghost.returncode, ghost.stderr) == (1, "error: no user 'ghost'\n")
    short = await asyncio.to_thread(_cli, *args, stdin="short\n")
    assert (short.returncode, short.stderr) == (
        1, "error: a password needs at least 8 characters\n")
    assert (await authenticate(store, "admin", new)).username == "admin"


async def test_manage_users_cli(store: Store, store_url: str) -> None:
    """list-users, set-tier, disable and enable: the same changes as the API, audit-logged as
    ``cli`` with the reason; a disabled user's tokens end."""
    await create_user(store, "bob", PASSWORD, "agent")
    token = issue_token("bob", 0, secret=SECRET)
    steps = [("set-tier", "--tier", "trainee"), ("disable",), ("enable",)]
    for verb, *more in steps:
        done = await asyncio.to_thread(_cli, verb, "--url", store_url, "--username", "bob",
                                       *more, "--reason", f"{verb} because")
        assert done.returncode == 0, done.stderr
    listed = await asyncio.to_thread(_cli, "list-users", "--url", store_url)
    assert (listed.returncode, listed.stdout) == (0, "bob\ttrainee\tactive\n")
    with pytest.raises(TokenRevoked):
        await user_from_token(store, token, secret=SECRET)
    assert [(e.actor, e.action, e.details) for e in await store.list_audit(actor="cli")] == [
        ("cli", "user_enabled", {"reason": "enable because"}),
        ("cli", "user_disabled", {"reason": "disable because"}),
        ("cli", "tier_changed", {"reason": "set-tier because", "before": "agent",
                                 "after": "trainee"})]
    bad = await asyncio.to_thread(_cli, "disable", "--url", store_url, "--username", "ghost",
                                  "--reason", "x")
    assert (bad.returncode, bad.stderr) == (1, "error: no user 'ghost'\n")


async def test_the_cli_lifts_a_login_lockout(store: Store, store_url: str) -> None:
    """A name locked by wrong passwords is unlocked from the command line (the limits are in
    the store, so every gateway node sees it), audit-logged as ``cli`` with the reason."""
    await create_user(store, "bob", PASSWORD, "agent")
    limits = LoginLimits(store, max_failures=3)
    for _ in range(3):
        await limits.failed("bob", "10.0.0.9")
    assert await limits.locked_names() == ["bob"]
    with pytest.raises(TooManyAttempts):
        await limits.check("bob", "10.0.0.8")
    done = await asyncio.to_thread(_cli, "unlock", "--url", store_url, "--username", "bob",
                                   "--reason", "called the help desk")
    assert (done.returncode, done.stdout) == (0, "bob\tagent\tactive\n"), done.stderr
    assert await limits.locked_names() == []
    await limits.check("bob", "10.0.0.8")  # no wait any more
    [entry] = await store.list_audit(actor="cli")
    assert (entry.action, entry.target, entry.details) == (
        "login_unlocked", "user:bob",
        {"reason": "called the help desk", "unlocked": True, "via": "cli"})
    ghost = await asyncio.to_thread(_cli, "unlock", "--url", store_url, "--username", "ghost",
                                    "--reason", "x")
    assert (ghost.returncode, ghost.stderr) == (1, "error: no user 'ghost'\n")


async def test_the_cli_uses_the_gateways_database_by_default(tmp_path: Path) -> None:
    """Without --url: $HANDOFF_DATABASE_URL, else .env's, else the gateway's default."""
    env_file = tmp_path / ".env"
    assert gateway_database_url({"HANDOFF_ENV_FILE": str(env_file)}) == (
        f"sqlite+aiosqlite:///{PROJECT_ROOT / 'var' / 'handoff.db'}")
    env_file.write_text("HANDOFF_DATABASE_URL=sqlite+aiosqlite:///var/other.db\n")
    assert gateway_database_url({"HANDOFF_ENV_FILE": str(env_file)}) == (
        f"sqlite+aiosqlite:///{PROJECT_ROOT / 'var' / 'other.db'}")
    assert gateway_database_url({"HANDOFF_ENV_FILE": str(env_file),
                                 "HANDOFF_DATABASE_URL": "postgresql+asyncpg://db/x"}) == (
        "postgresql+asyncpg://db/x")
