"""Where a batch delivery stands: its cursor into the batch's ids and its counters."""

from __future__ import annotations

from typing import Any

NOTHING_PROCESSED = object()  # no sub-chunk ran in this delivery (e.g. resumed at the end)


class Progress:
    """Ids processed, last id, running payload hash, item counters."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.processed = int(doc.get("processed") or 0)
        self.last_id: Any = NOTHING_PROCESSED
        self.payload_hash: str | None = doc.get("payload_hash")
        self.counters: dict[str, int] = dict(doc["counters"])

    def as_doc(self) -> dict[str, Any]:
        """The checkpoint fields, as store.checkpoint and store.finish_batch write them."""
        return {
            "processed": self.processed,
            "last_processed_id": self.last_id,
            "payload_hash": self.payload_hash,
            "counters": dict(self.counters),  # the loop goes on counting meanwhile
        }
