"""The commands and links of the README and ``docs/`` work as written.

Every ``quantif ...`` command in a fenced code block of ``README.md`` or ``docs/*.md`` must be
accepted by the ``quantif`` argument parser exactly as shown (argparse level: names, choices and
value types; the files it names need not exist). The documented convention for code blocks is:

- commands stand in blocks fenced as ```` ```bash ````; other blocks (diagrams, JSON, output) are not checked;

- placeholders are plain words (``PET.nii.gz``, ``DIR``, ``$nnUNet_results``): they parse as values;
- optional parts are described in the text, never written as ``[--flag VALUE]`` inside a block;
- a line that shows only part of a command writes ``...`` in place of what it leaves out, and is
  not checked (its omitted part may be required).

Every relative link ``[text](path)`` and every backquoted repository path (``docs/X.md``,
``scripts/x.py``, ``configs/x.json``, ``tests/x.py``, ``nnunet_quantif/...``) in those files must
name a file or folder that exists, and a link's ``#anchor`` must be a heading of the page it points to.

The README fits on a page (at most ``README_MAX_LINES`` lines) and links every page of ``docs/``.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 250

_FENCE = re.compile(r"^```")
#: Code blocks that hold commands; other blocks (diagrams, JSON, output) are not checked.
_SHELL_LANGS = ("bash", "sh", "shell", "console")
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_REPO_PATH = re.compile(r"`((?:docs|scripts|configs|tests|nnunet_quantif)/[A-Za-z0-9_./-]+)(?:::(\w+))?")
#: A bare backquoted markdown file name (``METHOD.md``): it must be one of the repository's pages.
_BARE_MD = re.compile(r"`([A-Za-z0-9_-]+\.md)`")
#: Markdown files that commands write (named in the docs as outputs, not as pages).
_OUTPUT_PAGES = {"report.md", "summary.md"}


def code_blocks(path: Path) -> list[tuple[int, str]]:
    """(first line number, text) of each ``bash`` code block of a markdown file, continuation lines joined."""
    blocks, current, start, lang = [], None, 0, ""
    for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if _FENCE.match(line.strip()):
            if current is None:
                current, start, lang = [], no + 1, line.strip()[3:].strip().lower()
            else:
                if lang in _SHELL_LANGS:
                    blocks.append((start, "\n".join(current).replace("\\\n", " ")))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def quantif_commands(path: Path) -> list[tuple[str, int, str]]:
    """(file, line, command) for every ``quantif`` command in the code blocks of ``path``."""
    out = []
    for start, block in code_blocks(path):
        for offset, line in enumerate(block.splitlines()):
            line = line.strip()
            if not line or line.startswith("#") or "..." in line:
                continue
            try:
                words = shlex.split(line, comments=True)
            except ValueError:
                continue
            segment: list[str] = []
            for w in [*words, "&&"]:
                if w in ("&&", "||", ";", "|") or w.endswith(";"):
                    if w.endswith(";") and w != ";":
                        segment.append(w[:-1])
                    if segment and segment[0] == "quantif":
                        out.append((path.name, start + offset, shlex.join(segment)))
                    segment = []
                else:
                    segment.append(w)
    return out


ALL_COMMANDS = [c for doc in DOCS for c in quantif_commands(doc)]


def test_the_docs_hold_commands():
    assert len(ALL_COMMANDS) >= 20, [c[2] for c in ALL_COMMANDS]


@pytest.mark.parametrize("where,line,command", ALL_COMMANDS, ids=[f"{c[0]}:{c[1]}" for c in ALL_COMMANDS])
def test_documented_command_parses(where, line, command, capsys):
    from nnunet_quantif.cli import build_parser

    argv = shlex.split(command)[1:]
    assert not any(a.startswith("[") for a in argv), f"{where}:{line}: square brackets inside a command: {command}"
    parser = build_parser()
    try:
        parser.parse_args(argv)
    except SystemExit as e:
        if e.code not in (0, None):  # --help and --version exit 0
            pytest.fail(f"{where}:{line}: `{command}` is refused by the parser: {capsys.readouterr().err.strip()}")


def _references(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    refs = [m.group(1) for m in _LINK.finditer(text)]
    refs += [m.group(1) for m in _REPO_PATH.finditer(text)]
    refs += [m.group(1) for m in _BARE_MD.finditer(text) if m.group(1) not in _OUTPUT_PAGES]
    return [r for r in refs if not re.match(r"^[a-z]+:", r)]


def heading_anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of a markdown page (lower case, punctuation but ``-`` and ``_``
    dropped, spaces to ``-``; a repeated heading gets ``-1``, ``-2``, ...)."""
    anchors: set[str] = set()
    in_fence = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line.strip()):
            in_fence = not in_fence
            continue
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if in_fence or not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
        anchor, n = slug, 0
        while anchor in anchors:
            n += 1
            anchor = f"{slug}-{n}"
        anchors.add(anchor)
    return anchors


def _test_names(path: Path) -> list[tuple[str, str]]:
    """(file, test function) for every backquoted ``tests/x.py::name`` in a page."""
    text = path.read_text(encoding="utf-8")
    return [(m.group(1), m.group(2)) for m in _REPO_PATH.finditer(text) if m.group(2)]


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_links_and_file_references_exist(doc):
    missing = []
    for ref in _references(doc):
        target, _, anchor = ref.partition("#")
        if any(c in target for c in "*<>{}$"):
            continue
        if not target:
            page = doc
        else:
            found = [base / target for base in (doc.parent, ROOT, ROOT / "docs") if (base / target).exists()]
            if not found:
                missing.append(ref)
                continue
            page = found[0]
        if anchor and page.suffix == ".md" and anchor not in heading_anchors(page):
            missing.append(ref)
    for file, name in _test_names(doc):
        if (ROOT / file).is_file() and not re.search(rf"^\s*(async )?def {name}\b|^class {name}\b",
                                                     (ROOT / file).read_text(encoding="utf-8"), re.M):
            missing.append(f"{file}::{name}")
    assert not missing, f"{doc.relative_to(ROOT)} names files, headings or tests that do not exist: {missing}"


def test_links_within_a_page_are_relative_to_it():
    """A link in ``docs/`` is relative to ``docs/`` (``[x](USAGE.md)``), as GitHub resolves it."""
    wrong = {doc.name: refs for doc in DOCS if doc.parent.name == "docs"
             if (refs := [m.group(1) for m in _LINK.finditer(doc.read_text(encoding="utf-8"))
                          if m.group(1).startswith("docs/")])}
    assert not wrong, wrong


def test_the_readme_fits_on_a_page_and_links_every_guide():
    readme = ROOT / "README.md"
    lines = readme.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines, more than {README_MAX_LINES}"
    linked = {ref.split("#", 1)[0] for ref in _references(readme)}
    unlinked = [f"docs/{d.name}" for d in DOCS[1:] if f"docs/{d.name}" not in linked]
    assert not unlinked, f"README.md links no page {unlinked}"


def test_heading_anchors_follow_github(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Interactive use (`nnunet_quantif.interactive.Session`, `quantif session`)\n"
                    "```bash\n# not a heading\n```\n## Tests\n## Tests\n## DSC ≥ 0.6: what's left?\n",
                    encoding="utf-8")
    assert heading_anchors(page) == {"interactive-use-nnunet_quantifinteractivesession-quantif-session",
                                     "tests", "tests-1", "dsc--06-whats-left"}
