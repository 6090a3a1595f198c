"""Every timed pass of a variant (revision 0004), mixed into ``engine.store.store.Store``.

``Store.finish_variant`` writes a variant's passes with its results; ``add_passes`` adds the
baseline's end-of-run re-measure to a variant already done. ORM rows never leave here.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

from sqlalchemy import select

from engine.core.domain import TimedPass
from engine.store.tables import PassRow, VariantRow

if TYPE_CHECKING:
    import pandas as pd

_PASS_FIELDS = list(TimedPass.__dataclass_fields__)


class PassStoreMixin:
    """Timed-pass methods of the Store (uses its ``_session`` and ``_get``)."""

    @staticmethod
    def _pass_rows(variant_id: int, passes) -> list[PassRow]:
        return [PassRow(variant_id=variant_id, **asdict(p)) for p in passes]

    def add_passes(self, variant_id: int, passes: list[TimedPass]) -> None:
        """Add timed passes to a variant (the baseline's re-measure at the end of a run)."""
        with self._session() as s:
            self._get(s, VariantRow, variant_id)
            s.add_all(self._pass_rows(variant_id, passes))

    def get_passes(self, variant_id: int) -> list[TimedPass]:
        """A variant's timed passes, the ``timed`` ones first, in pass order."""
        with self._session() as s:
            q = select(PassRow).where(PassRow.variant_id == variant_id).order_by(
                PassRow.role != "timed", PassRow.pass_index, PassRow.id)
            return [TimedPass(**{f: getattr(r, f) for f in _PASS_FIELDS}) for r in s.scalars(q)]

    def passes_frame(self, run_id: int) -> pd.DataFrame:
        """Every timed pass of a run: one row per pass, with ``variant`` and ``variant_id``."""
        import pandas as pd

        with self._session() as s:
            q = (select(PassRow, VariantRow.name).join(VariantRow, PassRow.variant_id == VariantRow.id)
                 .where(VariantRow.run_id == run_id)
                 .order_by(VariantRow.position, PassRow.role != "timed", PassRow.pass_index))
            rows = [{"variant": name, "variant_id": r.variant_id,
                     **{f: getattr(r, f) for f in _PASS_FIELDS}} for r, name in s.execute(q)]
        return pd.DataFrame(rows, columns=["variant", "variant_id", *_PASS_FIELDS])
