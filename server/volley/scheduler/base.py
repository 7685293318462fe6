"""The narrow interface every scheduler offers to the frontend."""

from __future__ import annotations

from typing import Protocol

from volley.scheduler.request import InferRequest, Outputs


class Scheduler(Protocol):
    """Queues requests for one model version and runs them on its instances."""

    async def infer(self, request: InferRequest) -> Outputs:
        """Run ``request`` and return its outputs; raises ``VolleyError`` on failure."""
        ...

    @property
    def queued(self) -> int:
        """Requests waiting in the queue."""
        ...

    @property
    def pending(self) -> int:
        """Requests accepted and not yet answered (queued or executing)."""
        ...

    def start(self) -> None:
        """Start background tasks; called on the event loop once the model is loaded."""
        ...

    async def drain(self, timeout: float) -> bool:
        """Refuse new requests and wait until every accepted one is answered (``timeout`` s);
        False when the wait timed out."""
        ...

    async def stop(self) -> None:
        """Fail what is still queued with UNAVAILABLE, wait for running batches, release threads."""
        ...
