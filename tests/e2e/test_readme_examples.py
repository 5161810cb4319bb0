"""The README's "### Writing a backfill" section: every block is a tested input, run as written.

Its Python examples are modules written unchanged into a directory outside this
repository (test_nested_backfill.py, tests/sources/test_readme_custom_source.py); its
scoped runs are the `backfill` commands run here, line by line, against the
`price-cents` definition of the walkthrough's `team_backfills.py`.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from tests.harness import System
from tests.readme_blocks import blocks, commands, fenced_blocks, section

pytestmark = pytest.mark.e2e

SECTION = "### Writing a backfill"
WALKTHROUGH = "### A team's project, file by file"
MODULE = "team_backfills"
COMMAND_TIMEOUT = 180
# The examples the tests of this section run; a new block needs a test and a name here.
EXAMPLES = {"example: rating_by_sku.py", "example: nested_backfills.py"}
COMMANDS = {"commands: scoped-runs"}

# 60 items, every third a tool, the last 4 without a price (outside price-cents' scope).
PRICED = 56
ITEMS = [
    {"_id": k, "category": "tools" if k % 3 == 0 else "garden"}
    | ({"price": k + 0.25} if k < PRICED else {})
    for k in range(60)
]
TOOLS = {k for k in range(PRICED) if k % 3 == 0}
# The README's ids.txt: a comment, a blank line, three garden items and one without a price.
IDS_FILE = "# the items a buyer asked about\n1\n4\n\n7\n58\n"
ASKED = {1, 4, 7}


def cents(k: int, factor: int = 1) -> int:
    return round((k + 0.25) * 100 * factor)


def test_every_block_of_the_section_is_marked_and_tested() -> None:
    found = fenced_blocks(section(SECTION))
    unmarked = [body.splitlines()[0] for mark, body in found if mark is None]
    assert not unmarked, f"code blocks of the section with no <!-- kind: name -->: {unmarked}"
    assert sorted(mark for mark, _ in found if mark) == sorted(EXAMPLES | COMMANDS)


def _backfill(line: str, env: dict[str, str], cwd: Path) -> str:
    """One README line, `backfill ...`, run as the CLI (this interpreter's orchestrator.cli)."""
    argv = shlex.split(line)
    assert argv[0] == "backfill", line
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *argv[1:]],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, f"`{line}` exited {done.returncode}:\n{out[-3000:]}"
    return out


def test_the_readme_scoped_runs_write_their_slice_then_the_rest(
    system: System, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "ourproject"
    project.mkdir()
    team_module = blocks("file", section(WALKTHROUGH))[f"{MODULE}.py"]
    (project / f"{MODULE}.py").write_text(team_module)
    (project / "ids.txt").write_text(IDS_FILE)
    monkeypatch.syspath_prepend(str(project))
    system.settings = replace(system.settings, imports=(MODULE,))
    system.start_workers(1, concurrency=2, extra_env={"PYTHONPATH": str(project)})
    env = {**os.environ, **system.settings.to_env(), "PYTHONPATH": str(project), "COLUMNS": "200"}

    items = system.db["items"]
    items.insert_many(ITEMS)
    lines = commands(blocks("commands", section(SECTION))["scoped-runs"])
    assert [line.split()[:3] for line in lines] == [["backfill", "run", "price-cents"]] * 4

    def written() -> dict[int, int]:
        found = items.find({"price_cents": {"$exists": True}})
        return {d["_id"]: d["price_cents"] for d in found}

    dry = _backfill(lines[0], env, project)  # --dry-run --sample 200
    assert f"dry run over {PRICED} documents" in dry and "nothing written" in dry
    assert written() == {}

    _backfill(lines[1], env, project)  # --filter '{"category": "tools"}' --limit 1000
    assert written() == {k: cents(k) for k in TOOLS}

    _backfill(lines[2], env, project)  # --ids-file ids.txt --param factor=2
    assert written() == {k: cents(k) for k in TOOLS} | {k: cents(k, 2) for k in ASKED}

    _backfill(lines[3], env, project)  # then everything, at the default factor
    assert written() == {k: cents(k) for k in range(PRICED)}
    for doc in items.find():
        k = doc["_id"]
        if k >= PRICED:
            assert doc == ITEMS[k]  # outside the definition's query: never touched
            continue
        assert type(doc["price_cents"]) is int and "price_cents_at" in doc
        assert {f: doc[f] for f in ("category", "price")} == {
            f: ITEMS[k][f] for f in ("category", "price")
        }
