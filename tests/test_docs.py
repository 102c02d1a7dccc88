"""The documentation's links resolve and the README stays a front page.

Every relative link and image in README.md and in every other ``*.md`` page of the repository
must name an existing file, and a ``#anchor`` must name a heading of the target page (GitHub's
heading ids). Links inside code (fenced blocks, inline backticks) are not links.
"""

import os
import re
from typing import Dict, List, Set

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README_MAX_LINES = 200
# Folders that hold no documentation of the project (venvs, outputs, data, caches).
SKIP_DIRS = {"output", "datasets", "__pycache__", "node_modules"}

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)
_INLINE_CODE = re.compile(r"`+[^`\n]*`+")
_LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)


def markdown_pages(root: str) -> List[str]:
    """Every ``*.md`` file under ``root``, skipping hidden folders, venvs, outputs and data."""
    pages = []
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(
            x
            for x in dirs
            if not x.startswith(".")
            and x not in SKIP_DIRS
            and not x.startswith(("output", ".venv"))
            and not x.endswith(".egg-info")
        )
        pages += [os.path.join(d, f) for f in sorted(files) if f.endswith(".md")]
    return pages


def _prose(text: str) -> str:
    """The text without fenced code blocks and inline code."""
    return _INLINE_CODE.sub("", _FENCE.sub("", text))


def heading_ids(text: str) -> Set[str]:
    """GitHub's ids of the headings of a page: lower case, punctuation dropped, spaces to
    hyphens, ``-1``, ``-2``... for repeats."""
    ids: Set[str] = set()
    seen: Dict[str, int] = {}
    for title in _HEADING.findall(_FENCE.sub("", text)):
        title = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", title)  # a link's text only
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        ids.add(slug if n == 0 else f"{slug}-{n}")
    return ids


def broken_links(page: str) -> List[str]:
    """``"target (reason)"`` for each relative link of ``page`` that does not resolve."""
    with open(page, encoding="utf-8") as f:
        text = f.read()
    bad = []
    for target in _LINK.findall(_prose(text)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:, ...
            continue
        path, _, anchor = target.partition("#")
        dest = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
        if not os.path.exists(dest):
            bad.append(f"{target} (no file {os.path.relpath(dest, REPO)})")
            continue
        if anchor and dest.endswith(".md"):
            with open(dest, encoding="utf-8") as f:
                if anchor not in heading_ids(f.read()):
                    bad.append(f"{target} (no heading #{anchor} in {os.path.relpath(dest, REPO)})")
    return bad


def test_every_relative_link_resolves():
    pages = markdown_pages(REPO)
    names = {os.path.relpath(p, REPO) for p in pages}
    # the front page and the pages behind it are all checked
    assert {"README.md", "INSTALL.md", "GETTING_STARTED.md", "docs/ARCHITECTURE.md"} <= names
    problems = {os.path.relpath(p, REPO): broken_links(p) for p in pages}
    assert {p: b for p, b in problems.items() if b} == {}


def test_readme_is_a_front_page():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        text = f.read()
    assert len(text.splitlines()) <= README_MAX_LINES
    # the commands come first: the first code block holds setup, test (what .ci/run runs) and demo
    first_block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    for command in ("make setup", "make test", "make demo", "tools/train_net.py"):
        assert command in first_block
    with open(os.path.join(REPO, ".ci", "run"), encoding="utf-8") as f:
        assert "make test" in f.read()


def test_link_checker_finds_broken_links(tmp_path):
    """The checker itself: a missing file, a missing heading, and what is not a link."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "A.md").write_text("# Title: `x.py` here\n## Title: `x.py` here\n")
    page = tmp_path / "README.md"
    page.write_text(
        "[ok](docs/A.md) [ok](docs/A.md#title-xpy-here) [ok](docs/A.md#title-xpy-here-1)\n"
        "[web](https://example.com/nope) `[code](nope.md)`\n```\n[fenced](nope.md)\n```\n"
        "[gone](docs/B.md) [bad anchor](docs/A.md#nope) ![img](docs/pic.png)\n"
    )
    bad = broken_links(str(page))
    assert [b.split(" ")[0] for b in bad] == ["docs/B.md", "docs/A.md#nope", "docs/pic.png"]
    assert markdown_pages(str(tmp_path)) == [str(page), str(tmp_path / "docs" / "A.md")]


@pytest.mark.parametrize(
    "title, slug",
    [
        ("Setup: `make setup`", "setup-make-setup"),
        (
            "Precision: bf16 / fp16 autocast, channels_last",
            "precision-bf16--fp16-autocast-channels_last",
        ),
        (
            "The ablation (paper Table 3): `make ablation`",
            "the-ablation-paper-table-3-make-ablation",
        ),
    ],
)
def test_heading_ids_follow_github(title, slug):
    assert slug in heading_ids(f"## {title}\n")
