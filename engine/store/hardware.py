"""Storage of the user's own hardware entries (reserved prices, on-premise amortised cost),
merged over the built-in catalog by key. Mixed into ``engine.store.store.Store``; like the rest of
the store, ORM rows never leave this module.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import String, select
from sqlalchemy.orm import Mapped, mapped_column

from engine.core.errors import SpecError
from engine.economics.hardware import CATALOG, Hardware, merge_catalog, validate_hardware
from engine.store.base import Base, CleanText, _now


class HardwareRow(Base):
    """A user's own hardware entry (reserved price, on-premise amortised cost). A row whose
    key is a built-in's overrides that entry; deleting it restores the built-in."""

    __tablename__ = "hardware"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(CleanText)
    kind: Mapped[str] = mapped_column(String(10))
    memory_gb: Mapped[float]
    price_per_hour: Mapped[float]
    price_source: Mapped[str] = mapped_column(CleanText)
    price_date: Mapped[str] = mapped_column(String(7))
    bandwidth_gbs: Mapped[float | None]
    bf16_tflops: Mapped[float | None]
    updated_at: Mapped[datetime] = mapped_column(default=_now, onupdate=_now)


_HARDWARE_FIELDS = ("key", "name", "kind", "memory_gb", "price_per_hour", "price_source",
                    "price_date", "bandwidth_gbs", "bf16_tflops")


class HardwareStoreMixin:
    """Hardware methods of the Store (uses its ``_session``)."""

    def add_hardware(self, **fields: Any) -> Hardware:
        """Store a user hardware entry (validated; SpecError names a bad field). A key equal
        to a built-in's overrides it; a key already stored by a user is refused."""
        hw = validate_hardware(**fields)
        with self._session() as s:
            if s.get(HardwareRow, hw.key) is not None:
                raise SpecError(f"Hardware {hw.key!r} is already stored; change it with "
                                "update_hardware or pick another key.")
            s.add(HardwareRow(**{f: getattr(hw, f) for f in _HARDWARE_FIELDS}))
        return hw

    def update_hardware(self, key: str, /, **changes: Any) -> Hardware:
        """Change fields of an entry. Editing a built-in stores a user copy that overrides
        it (e.g. ``update_hardware("nvidia-a10g", price_per_hour=0.6, price_source=...)``)."""
        current = self.hardware_catalog().get(key)
        if current is None:
            raise SpecError(f"No hardware {key!r} to update; add it with add_hardware first.")
        if changes.get("key", key) != key:
            raise SpecError("Hardware field 'key' cannot change; delete the entry and add it "
                            "under the new key.")
        merged = {f: getattr(current, f) for f in _HARDWARE_FIELDS} | changes
        hw = validate_hardware(**merged)
        with self._session() as s:
            row = s.get(HardwareRow, key)
            if row is None:
                s.add(HardwareRow(**{f: getattr(hw, f) for f in _HARDWARE_FIELDS}))
            else:
                for f in _HARDWARE_FIELDS:
                    setattr(row, f, getattr(hw, f))
        return hw

    def delete_hardware(self, key: str) -> None:
        """Remove a user entry (a built-in it overrode comes back); built-ins can't go."""
        with self._session() as s:
            row = s.get(HardwareRow, key)
            if row is None:
                hint = (" It is a built-in entry; override its price with update_hardware."
                        if key in CATALOG else "")
                raise SpecError(f"No user hardware {key!r} to delete.{hint}")
            s.delete(row)

    def list_hardware(self) -> list[Hardware]:
        """The user's own entries only, by key."""
        with self._session() as s:
            rows = s.scalars(select(HardwareRow).order_by(HardwareRow.key)).all()
            return [_hardware(r) for r in rows]

    def hardware_catalog(self) -> dict[str, Hardware]:
        """Built-in catalog with the user's entries merged over it by key."""
        return merge_catalog(self.list_hardware())

    def get_hardware(self, key: str) -> Hardware:
        """One entry from the merged catalog; unknown keys raise SpecError listing the known."""
        from engine.economics.hardware import get_hardware

        return get_hardware(key, self.hardware_catalog())


def _hardware(r: HardwareRow) -> Hardware:
    return Hardware(**{f: getattr(r, f) for f in _HARDWARE_FIELDS}, user_defined=True)
