"""The built-in dashboards: `GET /`, the page's static files, and the JSON routes its panels read.

The page (`pipeline/web/`) is static and self-contained (uPlot is vendored,
nothing loads from elsewhere), so it works offline. Its panels read
`GET /dashboard/panels` (everything but the demand chart, in one request a
refresh) and `GET /dashboard/demand?series=KEY`. Consumer lag is sampled
here once a second, because the broker's end offsets are not a table.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
from aiohttp import web

from pipeline.errors import InvalidChallenge
from pipeline.store import analytics_panels, panels
from pipeline.store.db import Database
from pipeline.store.http import _json

log = logging.getLogger(__name__)

LAG_SAMPLES = panels.INGEST_WINDOW
WEB_ROOT = Path(str(resources.files("pipeline.web")))


class Dashboard:
    """Routes of the built-in page, and the lag sampler that runs with the store."""

    def __init__(self, db: Database, lag: Callable[[], Awaitable[dict[str, int]]]) -> None:
        self.db = db
        self.lag = lag
        self.lag_history: deque[tuple[int, int]] = deque(maxlen=LAG_SAMPLES)
        self.last_lag: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    def register(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/", self.index)
        r.add_get("/dashboard/panels", self.get_panels)
        r.add_get("/dashboard/demand", self.get_demand)
        r.add_static("/web/", WEB_ROOT, follow_symlinks=False)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._sample_lag())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _sample_lag(self) -> None:
        while True:
            try:
                self.last_lag = dict(await self.lag())
                self.lag_history.append((int(time.time()), sum(self.last_lag.values())))
            except Exception:  # noqa: BLE001 - the broker may be away for a while; keep sampling
                log.debug("lag sample failed", exc_info=True)
            await asyncio.sleep(1.0)

    async def index(self, request: web.Request) -> web.Response:
        page = (WEB_ROOT / "index.html").read_text()
        return web.Response(text=page, content_type="text/html", headers={"Cache-Control": "no-cache"})

    def panels(self, now: int) -> dict[str, Any]:
        """Every panel but the demand chart; a panel whose query fails says why, the others still show."""
        out: dict[str, Any] = {"now": now}
        jobs: dict[str, Callable[[], Any]] = {
            "ingest": lambda: panels.ingest(self.db, now, self.last_lag, list(self.lag_history)),
            "events": lambda: panels.event_mix(self.db),
            "dead_letters": lambda: panels.dead_letters(self.db),
            "ledger": lambda: panels.ledger(self.db, now),
            "demand": lambda: analytics_panels.demand_series(self.db),
            "anomalies": lambda: analytics_panels.anomalies(self.db),
            "recent_event": lambda: panels.recent_event(self.db),
        }
        for name, job in jobs.items():
            try:
                out[name] = job()
            except duckdb.Error as exc:
                log.warning("dashboard panel %s failed: %s", name, exc)
                out[name] = {"available": False, "error": str(exc).splitlines()[0]}
        return out

    async def get_panels(self, request: web.Request) -> web.Response:
        return _json(await asyncio.to_thread(self.panels, int(time.time())))

    async def get_demand(self, request: web.Request) -> web.Response:
        series = request.query.get("series", "")
        if not series:
            raise InvalidChallenge("series is required, e.g. /dashboard/demand?series=total")
        return _json(await asyncio.to_thread(analytics_panels.demand, self.db, series))
