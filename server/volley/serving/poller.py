"""Poll mode: pick up new, changed and removed models and versions from the repository.

Every ``interval_s`` (and ``settle_s`` after a change was seen, so an update is served
promptly) each model directory is scanned. A model whose files differ from what its last load
attempt saw is loaded once its files have settled (no file changed for ``settle_s``): a copy
in progress is never loaded half-written, and an atomic rename of a finished folder is picked
up at the next poll. A model whose load failed is retried only when its files change again. A
model directory that disappears is unloaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from volley.errors import VolleyError
from volley.repository import watcher
from volley.serving.lifecycle import ModelManager

log = logging.getLogger("volley.serving")


class RepositoryPoller:
    """Keeps the served models in step with the repository directories."""

    def __init__(self, manager: ModelManager, interval_s: float, settle_s: float) -> None:
        self._manager = manager
        self._interval_s = interval_s
        self._settle_s = settle_s
        self._task: asyncio.Task[None] | None = None
        #: Polls completed (for tests and logs).
        self.polls = 0

    def start(self) -> None:
        """Poll in the background until ``stop``."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="volley-poller")

    async def stop(self) -> None:
        """Stop polling (a load in progress finishes: loads are shielded)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                unsettled = await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("repository poll failed")
                unsettled = False
            delay = min(self._interval_s, self._settle_s) if unsettled else self._interval_s
            await asyncio.sleep(delay)

    async def poll_once(self) -> bool:
        """Scan once and apply what settled; True when some change has not settled yet."""
        manager = self._manager
        loop = asyncio.get_running_loop()
        dirs = await loop.run_in_executor(None, manager.model_dirs)
        unsettled = False
        for name in list(manager.attempted):
            if name not in dirs:
                log.info("model '%s' was removed from the repository: unloading it", name)
                await manager.remove(name)
        for name, model_dir in sorted(dirs.items()):
            if model_dir is None:
                if name not in manager.attempted:
                    await self._load(name)
                continue
            scan = await loop.run_in_executor(None, watcher.scan_model, model_dir)
            if manager.attempted.get(name) == scan:
                continue
            if not scan.settled(self._settle_s, time.time_ns()):
                unsettled = True
                continue
            await self._load(name)
        self.polls += 1
        return unsettled

    async def _load(self, name: str) -> None:
        # A failure is logged by the manager, and what served keeps serving.
        with contextlib.suppress(VolleyError):
            await self._manager.load(name)
