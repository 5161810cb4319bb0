"""What idle clients cost the embedded server: streaming monitors vs polling ones.

Every process of ours holds a MongoClient, and each client's monitor either streams
`hello` (the server holds one open per client and wakes it several times a second) or
polls it once per heartbeat. This measures what the idle clients cost the writes, on one
fresh server per round, in alternating rounds:

    .venv/bin/python -m bench.monitor_mode [--clients 30] [--updates 3000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pymongo

from bench.probes import cpu_seconds
from orchestrator.stack import embedded_mongo_url, free_port, start_mongo

IDLE_SECONDS = 10.0
MODES = ("stream", "poll")  # pymongo's serverMonitoringMode values compared


def measure(
    mode: str, *, clients: int, updates: int, log_dir: Path, idle_seconds: float = IDLE_SECONDS
) -> dict[str, float]:
    """One round on a fresh server: idle CPU share, then server CPU-ms and wall-ms per update."""
    port = free_port()
    server, _ = start_mongo(None, port=port, log_dir=log_dir)
    url = embedded_mongo_url(port, monitoring=mode)
    writer: pymongo.MongoClient = pymongo.MongoClient(url)
    idle = [pymongo.MongoClient(url) for _ in range(clients)]
    try:
        for c in idle:
            c.admin.command("ping")
        time.sleep(1.0)  # every monitor past its first check
        before = cpu_seconds([server.pid], tree=False)
        time.sleep(idle_seconds)
        idle_share = (cpu_seconds([server.pid], tree=False) - before) / idle_seconds
        coll = writer.bench.monitor_mode
        coll.insert_many([{"_id": i, "x": 0} for i in range(updates)])
        before, started = cpu_seconds([server.pid], tree=False), time.monotonic()
        for i in range(updates):
            coll.update_one({"_id": i}, {"$set": {"x": 1}})
        wall = time.monotonic() - started
        cpu = cpu_seconds([server.pid], tree=False) - before
    finally:
        for c in idle:
            c.close()
        writer.close()
        server.stop()
    return {
        "idle_cpu_share": idle_share,
        "cpu_ms": 1000 * cpu / updates,
        "wall_ms": 1000 * wall / updates,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.monitor_mode", description=__doc__)
    p.add_argument("--clients", type=int, default=30)
    p.add_argument("--updates", type=int, default=3000)
    p.add_argument("--rounds", type=int, default=2)
    opts = p.parse_args(argv)
    results: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(opts.rounds):
            for mode in MODES:
                row = measure(mode, clients=opts.clients, updates=opts.updates, log_dir=Path(tmp))
                results[mode].append(row)
                print(
                    f"round {r + 1} {mode:6}: idle server CPU {100 * row['idle_cpu_share']:.1f} %, "
                    f"{row['cpu_ms']:.3f} server CPU-ms and {row['wall_ms']:.3f} ms per update",
                    flush=True,
                )
    med = {
        m: {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        for m, rows in results.items()
    }
    print(
        f"{opts.clients} idle clients cost the server "
        f"{100 * med['stream']['idle_cpu_share']:.2f} % of a CPU streaming, "
        f"{100 * med['poll']['idle_cpu_share']:.2f} % polling; "
        "poll / stream (medians): server CPU per update "
        f"{med['poll']['cpu_ms'] / med['stream']['cpu_ms']:.2f}x, time per update "
        f"{med['poll']['wall_ms'] / med['stream']['wall_ms']:.2f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
