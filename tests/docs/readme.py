"""The README's fenced code blocks, with the markers that say which ones not to run and why."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RUNNERS", "Block", "Command", "MarkupError", "blocks", "commands"]

#: Languages a block may be run as; any other block needs a skip marker.
RUNNERS = {"sh": "sh", "bash": "bash", "python": "python"}

# `<!-- readme-test: skip (why) -->`, alone on a line before its block (blank lines allowed).
_MARKER_START = "<!-- readme-test:"
_MARKER = re.compile(r"<!-- readme-test: (?P<verb>\S+) \((?P<reason>.*\S.*)\) -->")
_FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,})\s*(?P<lang>[^\s`]*)")


class MarkupError(ValueError):
    """A block or marker the test cannot interpret; the message names the README line."""


@dataclass(frozen=True)
class Block:
    """One fenced block: where it opens (1-based line), its language, text, and skip reason."""

    line: int
    lang: str
    text: str
    skip: str | None = None

    @property
    def id(self) -> str:
        return f"line{self.line}-{self.lang or 'plain'}"


@dataclass(frozen=True)
class Command:
    """One shell command of a block (continuation lines joined), with its README line."""

    line: int
    text: str


def blocks(path: Path) -> list[Block]:
    """Every fenced block of ``path``, in order; a malformed marker or fence raises MarkupError."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    pending: tuple[int, str] | None = None  # a skip marker waiting for its block
    i = 0
    while i < len(lines):
        text = lines[i]
        fence = _FENCE.match(text)
        if text.strip().startswith(_MARKER_START):
            marker = _MARKER.fullmatch(text.strip())
            if marker is None or marker["verb"] != "skip":
                raise MarkupError(f"line {i + 1}: write `<!-- readme-test: skip (reason) -->`, not {text!r}")
            pending = (i + 1, marker["reason"].strip())
        elif fence:
            close = fence["fence"]
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith(close)), None)
            if end is None:
                raise MarkupError(f"line {i + 1}: code block never closed")
            skip = pending[1] if pending else None
            found.append(Block(i + 1, fence["lang"], "\n".join(lines[i + 1 : end]) + "\n", skip))
            pending = None
            i = end
        elif text.strip() and pending is not None:
            raise MarkupError(f"line {pending[0]}: a skip marker not followed by a code block")
        i += 1
    if pending is not None:
        raise MarkupError(f"line {pending[0]}: a skip marker not followed by a code block")
    return found


def commands(block: Block) -> list[Command]:
    """A shell block's commands: comment and blank lines dropped, backslash continuations joined."""
    result: list[Command] = []
    current: list[str] = []
    start = 0
    for offset, text in enumerate(block.text.splitlines(), start=block.line + 1):
        if not current:
            if not text.strip() or text.lstrip().startswith("#"):
                continue
            start = offset
        if text.endswith("\\"):
            current.append(text[:-1])
            continue
        current.append(text)
        result.append(Command(start, " ".join(part.strip() for part in current)))
        current = []
    if current:
        raise MarkupError(f"line {start}: a command ends in a line continuation")
    return result
