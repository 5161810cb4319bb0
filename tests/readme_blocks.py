"""The README's marked code blocks, as tests take them: their input, never edited copies.

A block is marked by an HTML comment on the line above its fence, at the fence's
indentation (a block inside a list item is indented with it):

    <!-- example: rating_by_sku.py -->      a Python module, written unchanged to a file
    <!-- commands: scoped-runs -->          shell lines, run one by one

(`<!-- file: ... -->` marks the walkthrough's project files; test_walkthrough.py reads those.)
"""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
MARK = re.compile(r"<!-- (?P<kind>[a-z]+): (?P<name>\S+) -->")
FENCE = re.compile(r"(?P<indent> *)```(?P<lang>[a-z]*)")
HEADING = re.compile(r"(?P<level>#+) ")


def section(title: str, text: str | None = None) -> str:
    """The README's section under the heading line `title`, up to the next heading of its level."""
    lines = (README.read_text() if text is None else text).splitlines()
    assert title in lines, f"README lost its {title!r} heading"
    start = lines.index(title)
    level = len(title.split(" ", 1)[0])
    end = len(lines)
    in_fence = False
    for i in range(start + 1, len(lines)):
        if FENCE.fullmatch(lines[i].rstrip()):
            in_fence = not in_fence
        heading = HEADING.match(lines[i])
        if heading and not in_fence and len(heading["level"]) <= level:
            end = i
            break
    return "\n".join(lines[start:end]) + "\n"


def fenced_blocks(text: str) -> list[tuple[str | None, str]]:
    """Each fenced block of `text`: its marker ("kind: name", or None) and its body, unindented."""
    lines = text.splitlines()
    found: list[tuple[str | None, str]] = []
    i = 0
    while i < len(lines):
        fence = FENCE.fullmatch(lines[i].rstrip())
        if not fence:
            i += 1
            continue
        indent = fence["indent"]
        above = lines[i - 1].strip() if i else ""
        mark = MARK.fullmatch(above)
        body: list[str] = []
        i += 1
        while i < len(lines) and lines[i].rstrip() != indent + "```":
            line = lines[i]
            assert not line.strip() or line.startswith(indent), (
                f"a line outside its block: {line!r}"
            )
            body.append(line[len(indent) :])
            i += 1
        assert i < len(lines), "a fenced block is never closed"
        found.append((f"{mark['kind']}: {mark['name']}" if mark else None, "\n".join(body) + "\n"))
        i += 1
    return found


def blocks(kind: str, text: str) -> dict[str, str]:
    """name -> body of each `<!-- kind: name -->` block of `text`."""
    out: dict[str, str] = {}
    for mark, body in fenced_blocks(text):
        if mark and mark.startswith(kind + ": "):
            name = mark.split(": ", 1)[1]
            assert name not in out, f"two README blocks are marked {mark!r}"
            out[name] = body
    return out


def commands(body: str) -> list[str]:
    """The command lines of a shell block, without their trailing `  # ...` comments."""
    lines = [line.split("  #")[0].strip() for line in body.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]
