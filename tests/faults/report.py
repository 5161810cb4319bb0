"""Measured reliability numbers: recorded by the fault tests, rendered as docs/reliability.md.

While `RELIABILITY_JSON` names a file, every fault scenario merges its row into it (keyed
by scenario, so the soak can be run on its own and still land in the same table).

    RELIABILITY_JSON=docs/reliability.json pytest tests/faults -m "soak or not soak"
    python -m tests.faults.report docs/reliability.json docs/reliability.md
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from tests.faults.reconcile import Reconciliation

ENV = "RELIABILITY_JSON"
REPRODUCE = "make reliability"


def record(
    key: str,
    *,
    title: str,
    fault: str,
    how: str,
    outcome: str,
    rec: Reconciliation | None = None,
    seconds: float | None = None,
    **extra: Any,
) -> None:
    """Merge one scenario's row into the JSON file named by RELIABILITY_JSON (if set)."""
    target = os.environ.get(ENV)
    if not target:
        return
    row: dict[str, Any] = {
        "title": title,
        "fault": fault,
        "how": how,
        "outcome": outcome,
        "seconds": round(seconds, 1) if seconds is not None else None,
        "recorded_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        **extra,
    }
    if rec is not None:
        row.update(rec.as_dict())
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Locked read-modify-write of the file itself: two test sessions may record at once.
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        text = fh.read()
        data = json.loads(text) if text.strip() else {}
        data.setdefault("scenarios", {})[key] = row
        data["machine"] = f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores"
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def render(data: dict[str, Any]) -> str:
    """The markdown page for the recorded rows, in scenario order."""
    rows = data.get("scenarios", {})
    out = [
        "# Reliability: faults injected, and what they cost",
        "",
        "Produced from a real run of `tests/faults/` (real worker processes, Redis, SecantusDB",
        "and the HTTP catalog stand-in) — not written by hand. Reproduce with:",
        "",
        "```",
        REPRODUCE,
        "```",
        "",
        f"Machine: {data.get('machine', '?')}. Each scenario ends with a reconciliation "
        "(`tests/faults/reconcile.py`): every planned id is in exactly one batch, every batch",
        "is done with counters adding up to its size, every product holds exactly the",
        "stand-in's values unless it is accounted for (quarantined or deleted), `written`",
        "never exceeds the products that needed a write, and `verify` finds no mismatch.",
        "",
        "*Items lost*: products neither holding the catalog's values nor accounted for.",
        "*Written twice (forbidden)*: `written` counted beyond the products that needed a",
        "write — two workers writing one batch. *Re-fetched (allowed)*: ids the stand-in",
        "served more than once: after a crash the sub-chunk in progress (≤ 100 ids) is fetched",
        "again and its `$set` repeats as a no-op, which the design allows.",
        "",
        "| # | fault injected | how | outcome | products | items lost | written twice "
        "(forbidden) | re-fetched (allowed) | quarantined | deleted | final status | verify "
        "| time (s) |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    for key in sorted(rows):
        r = rows[key]
        out.append(
            "| "
            + " | ".join(
                _cell(v)
                for v in (
                    key,
                    r["fault"],
                    r["how"],
                    r["outcome"],
                    r.get("products", "—"),
                    r.get("lost", "—"),
                    r.get("written_twice", "—"),
                    r.get("refetched", "—"),
                    r.get("quarantined", "—"),
                    r.get("deleted", "—"),
                    r.get("status", "—"),
                    {True: "ok", False: "MISMATCH"}.get(r.get("verify_ok"), "—"),
                    r.get("seconds", "—"),
                )
            )
            + " |"
        )
    notes = [(k, rows[k]["notes"]) for k in sorted(rows) if rows[k].get("notes")]
    if notes:
        out += ["", "## Notes per scenario", ""]
        out += [f"- **{k}** ({rows[k]['title']}): {n}" for k, n in notes]
    out += ["", "## Bugs these tests found, fixed at the root", ""]
    out += ["| found by | symptom | cause | fix |", "|---|---|---|---|"]
    out += ["| " + " | ".join(row) + " |" for row in FINDINGS]
    out += ["", LIMITS.strip()]
    return "\n".join(out) + "\n"


# (found by, symptom, cause, fix) for each bug the fault, bad-input and security tests found.
FINDINGS: tuple[tuple[str, str, str, str], ...] = (
    (
        "5b (failing `find`)",
        "a batch sat `queued` until a sweeper re-sent it",
        "a transient MongoDB error before the lease (job read, taking the lease) or after "
        "the finish (dispatch) escaped the task, and the late ack dropped the message",
        "`workers/tasks.py`: before the lease the worker re-sends the batch itself; a failure "
        "loading the ids counts as an attempt; a failed dispatch after finishing is logged",
    ),
    (
        "8 (concurrent CLI)",
        "three `backfill run` at once made three active jobs",
        "`run` on a database without 20240405 wrote jobs into a `backfill_metadata` without "
        "the unique `active_key` index",
        "`backfill_engine/schema.py`: `launch` sets up the engine's collections and unique "
        "indexes first (20240405 calls the same code)",
    ),
    (
        "bad input",
        "`BACKFILL_BATCH_SIZE=0 backfill jobs` printed a traceback",
        "importing `workers.app` built the Celery app from the environment at import time, "
        "before `main()` could catch the error",
        "`orchestrator/commands.py` imports it when the broker is built",
    ),
    (
        "bad input",
        "`--rate 0`, a missing argument or an unknown verb printed click's 3-line usage block",
        "`main()` let click format usage errors",
        "`orchestrator/cli.py`: one `error:` line naming `--help`, exit 2",
    ),
    (
        "bad input",
        "`run` with an unreachable catalog or a wrong token created a job that could only "
        "stall (workers pause it on 401)",
        "nothing checked the catalog before creating the job",
        "`orchestrator/context.py` `check_catalog`, called by `run`; catalog retries log at "
        "INFO so the error stays the CLI's one stderr line",
    ),
)

LIMITS = """
## Known limits

- Recovery of killed workers, lost Redis messages and failures a worker could not even
  record (5a, 5e: the release is an update too) is the sweeper's job. The sweeper runs in
  `backfill run --wait`, `backfill status --watch`, `backfill sweep` and the 20240406
  migration. A job started with `backfill run` (no `--wait`) and left alone recovers
  only when one of those runs, or when Redis redelivers the unacked message after
  `BACKFILL_VISIBILITY_TIMEOUT` (2 h).
- A planner killed mid-planning holds its planner lease for 30 s: a second `backfill run`
  joins the job at once, but planning continues only once the lease lapses (scenario 3).
- SecantusDB checks credentials only for users it knows (with or without `--auth`): the
  security test creates a real SCRAM user and connects with `user:password@` in
  MONGO_URL, next to a Redis with `requirepass`, a catalog token and Flower basic auth.
- Re-fetched ids in 6a/6b/6d are the client's own retries of failed requests; in 1, 2, 4
  and 5 they are the sub-chunk in progress when the worker died or the write failed. In
  the soak (9) most of them are the 5xx retries (each retry asks for up to 100 ids again).
- Scenario 9 ran at the full 200 000 products (`SOAK_PRODUCTS` sets the size). Its time
  includes seeding 200 000 products and the reconciliation; the job itself ran about four
  minutes. SecantusDB answers a long `$in` in superlinear time, so `verify` and the
  reconciliation read products back in 100-id chunks.
"""


def main(argv: list[str]) -> int:
    """`python -m tests.faults.report [JSON] [MARKDOWN]`: render the recorded rows."""
    src = Path(argv[1] if len(argv) > 1 else "docs/reliability.json")
    dst = Path(argv[2] if len(argv) > 2 else "docs/reliability.md")
    data = json.loads(src.read_text())
    dst.write_text(render(data))
    print(f"wrote {dst} from {src} ({len(data.get('scenarios', {}))} scenarios)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
