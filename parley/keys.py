"""API keys and who a request is.

A key is ``prl_`` + 43 URL-safe characters (256 random bits), shown once when it is
created. Only its SHA-256 digest is stored. A slow password hash (bcrypt, argon2)
exists to make guessing *low-entropy* secrets expensive; a 256-bit random key cannot
be guessed at any speed, so a fast digest loses nothing and keeps every request's
lookup a single indexed equality match instead of ~100 ms of hashing.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from fastapi import Request
from sqlalchemy import Float, ForeignKey, String, func, select, update
from sqlalchemy.orm import Mapped, mapped_column

from parley.config import Settings
from parley.errors import ApiError
from parley.http import host_name
from parley.store.db import Database
from parley.store.schema import Base, User, new_id, now
from parley.users import Principal, ensure_local_user

log = structlog.get_logger(__name__)

KEY_PREFIX = "prl_"
_SHOWN_CHARS = 8
_TOUCH_EVERY_SECONDS = 60.0


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str | None] = mapped_column(String(200), default=None)
    prefix: Mapped[str] = mapped_column(String(20))
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    last_used_at: Mapped[float | None] = mapped_column(Float, default=None)
    revoked_at: Mapped[float | None] = mapped_column(Float, default=None)


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: str
    user_id: int
    user: str
    is_admin: bool
    name: str | None
    prefix: str
    created_at: float
    last_used_at: float | None
    revoked_at: float | None


@dataclass(frozen=True, slots=True)
class IssuedKey:
    info: KeyInfo
    secret: str


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class InsecureBind(RuntimeError):
    """Serving a non-loopback address with authentication switched off."""


def check_bind(settings: Settings) -> None:
    if settings.auth == "off" and not is_loopback(settings.host):
        raise InsecureBind(
            f"refusing to serve on {settings.host} with PARLEY_AUTH=off: anyone who can reach this "
            "address could use the server and read every conversation. Bind to 127.0.0.1, or set "
            "PARLEY_AUTH=auto (or required) and create keys with `parley keys create --user NAME`."
        )


async def create_key(
    db: Database, user_name: str, *, admin: bool = False, name: str | None = None
) -> IssuedKey:
    """Issue a key for ``user_name`` (created if new; ``admin`` also promotes an existing user)."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    async with db.transaction() as session:
        user = await session.scalar(select(User).where(User.name == user_name).order_by(User.id))
        if user is None:
            user = User(name=user_name, is_admin=admin)
            session.add(user)
            await session.flush()
        elif admin and not user.is_admin:
            user.is_admin = True
        key = ApiKey(
            id=new_id("key"),
            user_id=user.id,
            name=name,
            prefix=secret[: len(KEY_PREFIX) + _SHOWN_CHARS],
            digest=digest(secret),
            created_at=now(),
        )
        session.add(key)
        info = KeyInfo(
            key.id, user.id, user.name, user.is_admin, name, key.prefix, key.created_at, None, None
        )
    return IssuedKey(info, secret)


async def list_keys(db: Database, user_name: str | None = None) -> Sequence[KeyInfo]:
    stmt = select(ApiKey, User).join(User, User.id == ApiKey.user_id).order_by(ApiKey.created_at)
    if user_name is not None:
        stmt = stmt.where(User.name == user_name)
    async with db.session() as session:
        rows = (await session.execute(stmt)).all()
    return [_info(key, user) for key, user in rows]


async def revoke_key(db: Database, ident: str) -> KeyInfo | None:
    """Revoke a key by id (``key_...``) or by the prefix shown in listings. Idempotent."""
    async with db.transaction() as session:
        row = (
            await session.execute(
                select(ApiKey, User)
                .join(User, User.id == ApiKey.user_id)
                .where((ApiKey.id == ident) | (ApiKey.prefix == ident))
            )
        ).first()
        if row is None:
            return None
        key, user = row
        if key.revoked_at is None:
            key.revoked_at = now()
        return _info(key, user)


async def count_active_keys(db: Database) -> int:
    async with db.session() as session:
        value = await session.scalar(
            select(func.count()).select_from(ApiKey).where(ApiKey.revoked_at.is_(None))
        )
    return int(value or 0)


def _info(key: ApiKey, user: User) -> KeyInfo:
    return KeyInfo(
        key.id,
        user.id,
        user.name,
        user.is_admin,
        key.name,
        key.prefix,
        key.created_at,
        key.last_used_at,
        key.revoked_at,
    )


def _credential(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(
                401,
                "unauthorized",
                "the Authorization header must be 'Bearer <API key>'",
                headers={"WWW-Authenticate": 'Bearer realm="parley"'},
            )
        return token.strip()
    key = request.headers.get("x-api-key")
    return key.strip() if key is not None and key.strip() else None


def presented_prefix(request: Request) -> str | None:
    """The first characters of the credential a request presents (the part key listings show),
    to count failed attempts by; never raises."""
    header = request.headers.get("authorization")
    if header is not None:
        token = header.partition(" ")[2].strip()
    else:
        token = (request.headers.get("x-api-key") or "").strip()
    return token[: len(KEY_PREFIX) + _SHOWN_CHARS] or None


class Authenticator:
    """Turns a request's credentials into a ``Principal``."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self._db = db
        self._mode = settings.auth
        self._loopback_server = is_loopback(settings.host)
        self._local_hosts = frozenset(settings.allowed_hosts)
        self._touched: dict[str, float] = {}
        self.local_user: Principal | None = None

    async def start(self) -> None:
        self.local_user = await ensure_local_user(self._db)
        if self._mode != "off" and not self._loopback_server and await count_active_keys(self._db) == 0:
            log.warning(
                "no_api_keys", hint="every request will be refused: run `parley keys create --user NAME`"
            )

    def addressed_locally(self, request: Request) -> bool:
        """Whether the request names this machine in its ``Host``: a DNS-rebinding page's requests
        reach the loopback port too, but under the attacker's host name."""
        name = host_name(request.scope)
        return is_loopback(name) or name in self._local_hosts

    def _anonymous_allowed(self, request: Request) -> bool:
        if self._mode == "required" or not self.addressed_locally(request):
            return False
        if self._mode == "off":
            return True
        if not self._loopback_server:
            return False
        # Behind a proxy on the same machine, uvicorn reports the forwarded client instead.
        return request.client is not None and is_loopback(request.client.host)

    async def authenticate(self, request: Request) -> Principal:
        if self.local_user is None:
            raise ApiError(503, "starting", "the server is starting")
        secret = _credential(request)
        if secret is None:
            if self._anonymous_allowed(request):
                return self.local_user
            if self._mode != "required" and not self.addressed_locally(request):
                raise ApiError(
                    401,
                    "unauthorized",
                    "an API key is required: anonymous callers are trusted only on requests addressed "
                    "to this machine as localhost, 127.0.0.1 or [::1] (or a name in PARLEY_ALLOWED_HOSTS)",
                    headers={"WWW-Authenticate": 'Bearer realm="parley"'},
                )
            raise ApiError(
                401,
                "unauthorized",
                "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>' "
                "(an administrator creates one with `parley keys create --user NAME`)",
                headers={"WWW-Authenticate": 'Bearer realm="parley"'},
            )
        if not secret.startswith(KEY_PREFIX) and self._anonymous_allowed(request):
            # Not a Parley key at all (an SDK's placeholder such as ``api_key="unused"``, a seed's
            # ``test-key-123``): where a caller without a key is trusted, it counts as no key. A
            # Parley-shaped key that is wrong or revoked is still refused below.
            return self.local_user
        return await self.lookup(secret)

    async def lookup(self, secret: str) -> Principal:
        async with self._db.session() as session:
            row = (
                await session.execute(
                    select(ApiKey.id, ApiKey.revoked_at, User.id, User.name, User.is_admin)
                    .join(User, User.id == ApiKey.user_id)
                    .where(ApiKey.digest == digest(secret))
                )
            ).first()
        if row is None or row[1] is not None:
            raise ApiError(
                401,
                "invalid_api_key",
                "the API key is not valid or has been revoked",
                headers={"WWW-Authenticate": 'Bearer realm="parley", error="invalid_token"'},
            )
        key_id, _, user_id, name, is_admin = row
        await self._touch(key_id)
        return Principal(user_id, name, is_admin, key_id=key_id)

    async def _touch(self, key_id: str) -> None:
        """Record when a key was last used, at most once a minute per key."""
        moment = time.monotonic()
        if moment - self._touched.get(key_id, -_TOUCH_EVERY_SECONDS) < _TOUCH_EVERY_SECONDS:
            return
        self._touched[key_id] = moment
        async with self._db.session() as session, session.begin():
            await session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=now()))
