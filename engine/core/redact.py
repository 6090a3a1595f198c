"""Secrets stay out of messages: database URLs are masked, endpoint URLs may not carry them.

One masking function for every message that names the database URL (``mask_db_url``), one
check that refuses credentials inside an endpoint URL (``refuse_url_credentials``), and one
description of what an endpoint request sent for authentication (``auth_sent``) that names
the variable and the key's length, never the key.
"""
from __future__ import annotations

from urllib.parse import urlsplit

DB_URL_EXAMPLE = "postgresql+psycopg://USER:PASSWORD@HOST:5432/DBNAME"


def mask_db_url(url: str) -> str:
    """``url`` as it may be shown: the password replaced by ``***``, whether or not
    SQLAlchemy can parse the URL (a missing scheme, a port that is not a number)."""
    from sqlalchemy import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return _mask_unparsed(url)


def _mask_unparsed(url: str) -> str:
    """Everything between the first ':' of the netloc-like part and its last '@' masked.
    Masks too much rather than too little: ``host:x/y@z`` loses ``x/y``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    colon, at = rest.find(":"), rest.rfind("@")
    if colon == -1 or at < colon:
        return url
    return f"{scheme}{sep}{rest[:colon]}:***{rest[at:]}"


def scrub(text: str, url: str) -> str:
    """``text`` (e.g. a driver's error) with ``url``'s password replaced by ``***``."""
    secret = _password(url)
    return text.replace(secret, "***") if secret else text


def _password(url: str) -> str | None:
    from sqlalchemy import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).password or None
    except (ArgumentError, ValueError):
        rest = url.partition("://")[2] or url
        colon, at = rest.find(":"), rest.rfind("@")
        return rest[colon + 1:at] or None if -1 < colon < at else None


def refuse_url_credentials(url: str, field: str = "base_url") -> str:
    """``url`` unchanged, or ValueError when it carries ``user:password@``: specs are stored
    with every run and shown in reports, so a key in the URL would be too."""
    try:
        parts = urlsplit(url)
        has = parts.username is not None or parts.password is not None
    except ValueError:  # e.g. a bad port; the '@' test below still applies
        has = "@" in url.partition("://")[2].split("/")[0]
    if has:
        raise ValueError(
            f"{field} carries credentials (user:password@host); they would be stored with "
            "every run and shown in reports. Remove them from the URL and put the API key in "
            "an environment variable whose NAME you give as api_key_env (e.g. "
            "api_key_env: PROD_API_KEY, then export PROD_API_KEY=...)")
    return url


def auth_sent(api_key_env: str | None, key: str | None) -> str:
    """What a request sent for authentication, for an HTTP 401/403 message."""
    if not api_key_env:
        return "sent no Authorization header (api_key_env not set)"
    if not key:
        return f"sent no Authorization header (${api_key_env} is empty or not set)"
    return f"sent Authorization: Bearer <key from ${api_key_env}, {len(key)} characters>"
