"""Model versions: every Rasa model the gateway has known, which one is live, and who deployed it
(the ``model_versions`` table, ``docs/store.md``, ``docs/deploys.md``). Part of
:class:`~handoff.store.Store`."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from handoff.errors import NotFound
from handoff.store.database import Database, check_limit, now, one_of, record
from handoff.store.records import ModelVersion
from handoff.store.schema import audit_log, model_versions

__all__ = ["MODEL_STATUSES", "ModelStore"]

MODEL_STATUSES: Final = ("candidate", "live", "retired")


class ModelStore(Database):
    """Model versions; exactly one is ``live``."""

    async def record_model(
        self, model_id: str, file: str, *, status: str = "candidate",
        trained_at: datetime | None = None, retrained_by: str | None = None,
        corrections: list[int] | None = None, proof: dict[str, Any] | None = None,
    ) -> ModelVersion:
        """Add a model version, or update the file, training and proof of a known one (its
        status and deployment stay as they are)."""
        one_of("status", status, MODEL_STATUSES)
        values = {"file": file, "trained_at": trained_at, "retrained_by": retrained_by,
                  "corrections": corrections, "proof": proof}
        async with self._tx(write=True) as conn:
            found = (await conn.execute(sa.select(model_versions.c.model_id).where(
                model_versions.c.model_id == model_id))).first()
            if found is None:
                await conn.execute(sa.insert(model_versions).values(
                    model_id=model_id, status=status, created_at=now(), **values))
            else:
                await conn.execute(sa.update(model_versions).where(
                    model_versions.c.model_id == model_id).values(
                    **{k: v for k, v in values.items() if v is not None}))
            return await self._model(conn, model_id)

    async def get_model(self, model_id: str) -> ModelVersion:
        async with self._tx(write=False) as conn:
            return await self._model(conn, model_id)

    async def list_models(self, limit: int = 50) -> list[ModelVersion]:
        """Model versions, newest first."""
        check_limit(limit)
        async with self._tx(write=False) as conn:
            rows = await conn.execute(sa.select(model_versions).order_by(
                model_versions.c.created_at.desc(), model_versions.c.model_id).limit(limit))
            return [record(ModelVersion, row) for row in rows]

    async def live_model(self) -> ModelVersion | None:
        async with self._tx(write=False) as conn:
            row = (await conn.execute(sa.select(model_versions).where(
                model_versions.c.status == "live"))).first()
        return None if row is None else record(ModelVersion, row)

    async def set_live_model(self, model_id: str, *, deployed_by: str,
                             override: str | None = None,
                             details: dict[str, Any] | None = None) -> ModelVersion:
        """``model_id`` is live now, the one live before retired; audit-logged in the same
        transaction (``model_deployed``, with ``override`` when given)."""
        at = now()
        async with self._tx(write=True) as conn:
            await self._model(conn, model_id)
            await conn.execute(sa.update(model_versions).where(
                model_versions.c.status == "live", model_versions.c.model_id != model_id)
                .values(status="retired"))
            await conn.execute(sa.update(model_versions).where(
                model_versions.c.model_id == model_id).values(
                status="live", deployed_at=at, deployed_by=deployed_by, override=override))
            await conn.execute(sa.insert(audit_log).values(
                created_at=at, actor=deployed_by, action="model_deployed",
                target=f"model:{model_id}", details={**(details or {}), "override": override}))
            return await self._model(conn, model_id)

    async def _model(self, conn: AsyncConnection, model_id: str) -> ModelVersion:
        row = (await conn.execute(sa.select(model_versions).where(
            model_versions.c.model_id == model_id))).first()
        if row is None:
            raise NotFound(f"no model {model_id}")
        return record(ModelVersion, row)
