"""One bad answer must not take its good neighbours down: only the bad ids are quarantined.

End to end with real workers against a hostile stand-in: items whose 2 MiB strings make
any request holding two of them over the response cap, and an id whose presence makes
the API (a WAF in front of it) answer 403 for the whole request.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bson import ObjectId

from backfill_engine.states import QUARANTINE
from catalog_service.data import expected_fields, hostile_kind, is_hostile, is_refused
from migrations.versions._catalog import PRODUCTS
from tests.catalog_definition import CATALOG_FIELDS
from tests.faults.reconcile import reconcile
from tests.faults.report import record
from tests.harness import System

N_PRODUCTS = 1000
SUBCHUNK = 100  # ids per catalog request (BACKFILL_SUBCHUNK_SIZE's default)
HOSTILE_RATE = 0.3  # a huge_string for about 3 % of ids: several per request
HUGE_CHARS = 2 * 1024 * 1024  # under the response cap alone, two together are over it
N_HUGE = 8
REFUSE_RATE = 0.05


def seed_with(
    system: System, bad: Callable[[str], bool], n_bad: int, good: Callable[[str], bool]
) -> tuple[list[Any], set[Any]]:
    """N_PRODUCTS products in ascending `_id` order: the first `n_bad` ids `bad` picks
    among ids `good` picks (ObjectIds of one process ascend, so bad ones sit together)."""
    ids: list[Any] = []
    bads: set[Any] = set()
    while len(ids) < N_PRODUCTS:
        oid = ObjectId()
        if len(bads) < n_bad and bad(str(oid)):
            bads.add(oid)
            ids.append(oid)
        elif good(str(oid)):
            ids.append(oid)
    system.db[PRODUCTS].insert_many([{"_id": i, "sku": f"S{k}"} for k, i in enumerate(ids)])
    return ids, bads


def assert_only_bad_ones_held(
    system: System, job_id: str, ids: list[Any], bads: set[Any]
) -> dict[Any, Any]:
    summary = system.summary(job_id)
    assert summary.job["status"] == "completed_with_errors", summary.job["status"]
    held = {d["item_id"]: d for d in system.db[QUARANTINE].find({"job_id": job_id})}
    assert set(held) == bads, f"{len(set(held) - bads)} good products quarantined"
    fields = list(CATALOG_FIELDS)
    for doc in system.db[PRODUCTS].find({"_id": {"$nin": list(bads)}}):
        assert {k: doc.get(k) for k in fields} == expected_fields(str(doc["_id"]))
    assert summary.items["written"] == len(ids) - len(bads)
    return held


def test_big_answers_quarantine_only_themselves_and_every_good_product_is_written(
    system: System,
) -> None:
    started = time.monotonic()
    system.start_catalog("--hostile-rate", str(HOSTILE_RATE), "--huge-chars", str(HUGE_CHARS))

    def huge(s: str) -> bool:
        return is_hostile(s, 0, HOSTILE_RATE) and hostile_kind(s) == "huge_string"

    ids, bads = seed_with(system, huge, N_HUGE, lambda s: not is_hostile(s, 0, HOSTILE_RATE))
    per_request = [len(bads & set(ids[k : k + SUBCHUNK])) for k in range(0, len(ids), SUBCHUNK)]
    assert max(per_request) >= 2, "some request holds two big answers: over the cap together"

    system.start_workers(1)
    job_id = system.launch()
    system.wait(job_id, stop_when_paused=True)

    held = assert_only_bad_ones_held(system, job_id, ids, bads)
    assert all(d["error"].endswith("bytes, limit 16384") for d in held.values())
    # Splitting costs about two requests per halving level per bad id, not a retry storm.
    requests_made = system.stats()["requests"]
    assert requests_made <= len(ids) // SUBCHUNK + N_HUGE * 2 * 7 + 10
    rec = reconcile(system, job_id, ids, status="completed_with_errors", count_refetches=False)
    assert rec.quarantined == len(bads)
    record(
        "r3-0",
        title="Big answers beside good ones",
        fault=f"{N_HUGE} of {len(ids)} catalog items carry a 2 MiB string: any request "
        "holding two is over the 3.125 MiB response cap",
        how="stand-in `--hostile-rate 0.3 --huge-chars 2097152`, the huge ones seeded "
        "together; 1 worker",
        outcome=f"refused requests split in halves: {requests_made} requests in all; only "
        f"the {len(bads)} big ones quarantined, every good product written",
        rec=rec,
        seconds=time.monotonic() - started,
    )


def test_a_403_for_one_ids_content_neither_pauses_the_job_nor_holds_its_neighbours(
    system: System,
) -> None:
    started = time.monotonic()
    system.start_catalog("--refuse-rate", str(REFUSE_RATE), "--refuse-status", "403")
    ids, bads = seed_with(
        system,
        lambda s: is_refused(s, 0, REFUSE_RATE),
        1,
        lambda s: not is_refused(s, 0, REFUSE_RATE),
    )

    system.start_workers(1)
    job_id = system.launch()
    system.wait(job_id, stop_when_paused=True)

    held = assert_only_bad_ones_held(system, job_id, ids, bads)
    (refused,) = held.values()
    assert refused["reason"] == "invalid"
    assert refused["error"] == "the API refused this id even alone: HTTP 403"
    rec = reconcile(system, job_id, ids, status="completed_with_errors", count_refetches=False)
    record(
        "r3-10",
        title="403 for one id's content",
        fault="the API (a WAF in front of it) answers 403 to any request naming one id",
        how="stand-in `--refuse-rate 0.05 --refuse-status 403`, one such id among 1 000",
        outcome="the request is split until the id stands alone; only it is quarantined, "
        "the job is never paused",
        rec=rec,
        seconds=time.monotonic() - started,
    )
