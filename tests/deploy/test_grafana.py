"""The Grafana dashboard is valid JSON and plots only metrics we or Flower export."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path
from typing import Any

from orchestrator.metrics import METRIC_NAMES

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "mongo-backfill.json"
METRIC = re.compile(r"\b((?:backfill|flower)_[a-z0-9_]+)\b")
SUFFIXES = ("", "_total", "_bucket", "_sum", "_count", "_created")


def flower_metric_names() -> set[str]:
    """What Flower's own /metrics exports, read from the installed Flower's definitions."""
    import flower.events

    source = inspect.getsource(flower.events.PrometheusMetrics.__init__)
    names = re.findall(r"['\"](flower_[a-z_]+)['\"]", source)
    assert "flower_events_total" in names, "Flower's metric definitions moved; update this test"
    return {n + s for n in names for s in SUFFIXES}


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows hold their panels
    return out


def test_dashboard_is_json_and_every_expression_names_an_exported_metric() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ours = {n.removesuffix("_total") + s for n in METRIC_NAMES for s in SUFFIXES}
    known = ours | flower_metric_names()
    panels = _panels(dashboard)
    assert panels and len({p["id"] for p in panels}) == len(panels)
    used: set[str] = set()
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = set(METRIC.findall(target["expr"]))
            assert names, f"{panel['title']}: no metric in {target['expr']!r}"
            assert names <= known, f"{panel['title']}: unknown {names - known}"
            used |= names
    assert any(n.startswith("flower_") for n in used)  # Flower's view is on the dashboard
    assert {"backfill_documents_per_second", "backfill_eta_seconds"} <= used
