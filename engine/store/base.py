"""The declarative base every stored table shares (so ``create_all`` makes them all), and
the column types that behave the same on SQLite and PostgreSQL."""
from __future__ import annotations

import math
import re
from datetime import UTC, datetime

from sqlalchemy import Float, Text, TypeDecorator
from sqlalchemy.orm import DeclarativeBase


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


_SURROGATE = re.compile("[\ud800-\udfff]")


class Base(DeclarativeBase):
    pass


class CleanText(TypeDecorator):
    """Unbounded text. PostgreSQL text cannot hold U+0000 (a model may emit it, a log may
    carry it), and no UTF-8 database can hold a lone surrogate (a file name or ``--name``
    with bytes that are not UTF-8 arrives with them), so both are stored as U+FFFD on every
    backend: one answer, and no write fails."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return clean_text(value) if isinstance(value, str) else value


def clean_text(value: str) -> str:
    """``value`` as CleanText stores it: U+0000 and lone surrogates become U+FFFD."""
    value = value.replace("\x00", "\ufffd")
    return value if value.isascii() else _SURROGATE.sub("\ufffd", value)


class Measure(TypeDecorator):
    """A double; NaN is stored as NULL ("no value"), as SQLite always did and PostgreSQL
    would not (it keeps NaN). Infinities are kept."""

    impl = Float
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return None if isinstance(value, float) and math.isnan(value) else value
