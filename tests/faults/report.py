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
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = json.loads(path.read_text()) if path.exists() else {}
        data.setdefault("scenarios", {})[key] = row
        data["machine"] = f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores"
        path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


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
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    src = Path(argv[1] if len(argv) > 1 else "docs/reliability.json")
    dst = Path(argv[2] if len(argv) > 2 else "docs/reliability.md")
    data = json.loads(src.read_text())
    dst.write_text(render(data))
    print(f"wrote {dst} from {src} ({len(data.get('scenarios', {}))} scenarios)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
