"""Every repository path the README and docs/ name in backticks exists (moved code must not leave docs behind)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "deploy" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TOP_LEVEL = ("payments/", "orchestrator/", "consumers/", "projections/", "ops/", "tests/", "schemas/", "docs/",
             "benchmarks/", "deploy/")
# `path/to/file.py`, `a/folder/`, optionally followed by a symbol (`path.py` `Name`): not templates with <...>.
PATH = re.compile(r"`((?:" + "|".join(re.escape(p) for p in TOP_LEVEL) + r")[A-Za-z0-9_./-]*)`")


def mentioned(doc: Path) -> list[str]:
    return sorted({match for match in PATH.findall(doc.read_text()) if "<" not in match})


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: str(d.relative_to(ROOT)))
def test_every_path_named_in_the_docs_exists(doc: Path) -> None:
    missing = [path for path in mentioned(doc) if not (ROOT / path).exists()]
    assert missing == []


def test_the_docs_name_paths_at_all() -> None:
    assert len([p for doc in DOCS for p in mentioned(doc)]) > 30  # the pattern still matches how we write
