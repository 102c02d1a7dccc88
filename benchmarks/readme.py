"""The benchmark tables of ``docs/BENCHMARKS.md``, generated from the benchmark JSON files.

Each subcommand of ``tools/benchmark.py`` writes ``DIR/<name>.json`` whose ``"markdown"`` entry
is its table (and the sentences computed from its numbers). The page holds one block per
benchmark between two markers::

    <!-- benchmark:joint -->
    ...generated, do not edit...
    <!-- /benchmark:joint -->

:func:`update_readme` replaces the body of every block whose JSON is in ``DIR`` with that
JSON's markdown (plus a line naming the JSON file), and leaves the prose outside the blocks
alone. ``python tools/benchmark.py readme --results docs/benchmarks`` runs it (``make
benchmark-readme``); ``--page`` names another markdown file.
"""

import json
import logging
import os
import re
from typing import Dict, List, Optional, Sequence

__all__ = ["ReadmeError", "find_blocks", "render_block", "update_readme"]

logger = logging.getLogger(__name__)

_BLOCK = re.compile(
    r"(?P<open><!-- benchmark:(?P<name>[a-z_]+) -->\n)(?P<body>.*?)"
    r"(?P<close><!-- /benchmark:(?P=name) -->)",
    re.S,
)


class ReadmeError(ValueError):
    """A page without the expected markers, or a benchmark JSON without markdown."""


def find_blocks(text: str) -> Dict[str, str]:
    """Benchmark name -> current body of its block in ``text``.

    Raises:
        ReadmeError when a name has two blocks, or an opening marker has no closing one.
    """
    blocks: Dict[str, str] = {}
    for m in _BLOCK.finditer(text):
        if m.group("name") in blocks:
            raise ReadmeError(f"two blocks for benchmark {m.group('name')!r}")
        blocks[m.group("name")] = m.group("body")
    opened = set(re.findall(r"<!-- benchmark:([a-z_]+) -->", text))
    unclosed = sorted(opened - set(blocks))
    if unclosed:
        raise ReadmeError(f"no closing marker <!-- /benchmark:NAME --> for {unclosed}")
    return blocks


def render_block(result: Dict, json_path: str) -> str:
    """The body of one block: the result's markdown and a line naming its JSON file."""
    md = result.get("markdown")
    if not md:
        raise ReadmeError(f"{json_path} has no 'markdown' entry (not a benchmark result?)")
    return f"{md.rstrip()}\n\n<sub>Generated from `{json_path}`.</sub>\n"


def update_readme(
    readme: str, results_dir: str, names: Optional[Sequence[str]] = None, root: str = "."
) -> List[str]:
    """Refill the benchmark blocks of a markdown page from ``results_dir/<name>.json``.

    Args:
        readme: path of the page to rewrite in place (``docs/BENCHMARKS.md``).
        results_dir: folder of benchmark JSON files.
        names: the blocks to refill (default: every block whose JSON exists).
        root: JSON paths are written relative to it in the page.
    Returns:
        The names of the blocks that were refilled.
    Raises:
        ReadmeError when a requested block or JSON file is missing, or a JSON file has no
        markdown; nothing is written then.
    """
    with open(readme) as f:
        text = f.read()
    blocks = find_blocks(text)
    if names is None:
        names = [n for n in blocks if os.path.isfile(os.path.join(results_dir, f"{n}.json"))]
    missing = [n for n in names if n not in blocks]
    if missing:
        raise ReadmeError(
            f"{readme} has no block for {missing}: add <!-- benchmark:NAME --> and "
            "<!-- /benchmark:NAME --> lines where the table belongs"
        )
    bodies = {}
    for name in names:
        path = os.path.join(results_dir, f"{name}.json")
        if not os.path.isfile(path):
            raise ReadmeError(
                f"no benchmark result {path}: run `python tools/benchmark.py "
                f"{name} --output {results_dir}` first"
            )
        with open(path) as f:
            try:
                result = json.load(f)
            except json.JSONDecodeError as e:
                raise ReadmeError(f"{path} does not parse: {e}") from e
        bodies[name] = render_block(result, os.path.relpath(path, root))

    def fill(m):
        name = m.group("name")
        if name not in bodies:
            return m.group(0)
        return m.group("open") + bodies[name] + m.group("close")

    new_text = _BLOCK.sub(fill, text)
    if new_text != text:
        with open(readme, "w") as f:
            f.write(new_text)
    logger.info("%s: blocks refilled from %s: %s", readme, results_dir, ", ".join(names) or "none")
    return list(names)
