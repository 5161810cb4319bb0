"""One sub-chunk's writes in one command, where the server takes a client-level bulkWrite.

MongoDB 8.0 (wire version 25) added `bulkWrite`, one command across collections. Sent
ordered, it does what the core otherwise sends as three: the sub-chunk's before-images
(the journal), its document updates, then the checkpoint after them. Ordered is the
point: the server stops at the first failed operation, so a document is never written
without its before-image, and the checkpoint lands only with every write it covers. So a
crash costs the retry what it always did, the sub-chunk in flight, and no more. Older
servers get the same three as separate commands (backfill_engine.batch_run).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pymongo import InsertOne, MongoClient, UpdateOne
from pymongo.database import Database

from backfill_engine.journal import JOURNAL
from backfill_engine.states import METADATA

CLIENT_BULK_WRITE_WIRE_VERSION = 25  # MongoDB 8.0

_offered: dict[int, bool] = {}
_lock = threading.Lock()


def offers_client_bulk_write(client: MongoClient) -> bool:
    """Whether the server takes `bulkWrite` (asked once per client with `hello`)."""
    key = id(client)
    with _lock:
        known = _offered.get(key)
    if known is None:
        hello = client.admin.command("hello")
        known = int(hello.get("maxWireVersion") or 0) >= CLIENT_BULK_WRITE_WIRE_VERSION
        with _lock:
            _offered[key] = known
    return known


@dataclass(frozen=True)
class WriteCounts:
    """What the document updates matched and changed (the checkpoint and journal not counted)."""

    matched_count: int
    modified_count: int


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint to send first: the lease's guard and store.checkpoint_update's update."""

    guard: dict[str, Any]
    update: dict[str, Any]


def write_together(
    db: Database,
    *,
    checkpoint: Checkpoint | None,
    journal_docs: Sequence[dict[str, Any]],
    ops: Sequence[UpdateOne],
) -> tuple[WriteCounts, bool | None]:
    """Send journal, updates and checkpoint as one ordered bulkWrite.

    `ops` must carry their namespace (`UpdateOne(..., namespace="db.coll")`). Returns the
    updates' counts and whether the checkpoint matched its lease (None: none was sent).

    The reply is the summary alone (`errorsOnly`): per-operation results would cost the
    server a result document per written document and the reply as many bytes. A missed
    update is no error, so the summary's counts hold the checkpoint's too: a checkpoint
    that matches changes its batch (its `processed` moves on), so when every update and
    the checkpoint matched, the checkpoint's one match and one change come off. Fewer
    matches (a document deleted meanwhile, or the lease lost) are told apart by reading the
    batch under the same guard: a fencing token never comes back, so a batch still under
    it holds the checkpoint exactly when the checkpoint matched.
    """
    models: list[InsertOne | UpdateOne] = [
        InsertOne(doc, namespace=f"{db.name}.{JOURNAL}") for doc in journal_docs
    ]
    models.extend(ops)
    if checkpoint is not None:
        models.append(
            UpdateOne(checkpoint.guard, checkpoint.update, namespace=f"{db.name}.{METADATA}")
        )
    res = db.client.bulk_write(
        models, ordered=True, verbose_results=False, write_concern=db.write_concern
    )
    matched, modified = res.matched_count, res.modified_count
    if checkpoint is None:
        return WriteCounts(matched, modified), None
    held = matched == len(ops) + 1 or _checkpoint_landed(db, checkpoint)
    if held:
        matched, modified = matched - 1, modified - 1
    return WriteCounts(matched, modified), held


def _checkpoint_landed(db: Database, checkpoint: Checkpoint) -> bool:
    """Whether the batch under the checkpoint's guard holds the progress it recorded."""
    recorded = checkpoint.update["$set"]["processed"]
    batch = db[METADATA].find_one(checkpoint.guard, {"processed": 1})
    return batch is not None and batch.get("processed") == recorded
