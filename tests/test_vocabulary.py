"""One vocabulary across the quantif commands; old spellings are hidden aliases (nnunet_quantif.cli.vocabulary)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from nnunet_quantif.cli import build_parser
from nnunet_quantif.cli.reference import commands, options, update_page

DOC = Path(__file__).resolve().parents[1] / "docs" / "CLI.md"

#: (command words, new spelling, old spelling, attribute, value as typed, parsed value, other required argv)
RENAMES = [
    (["convert"], "--input", "--src", "src", "S", "S", ["--out", "o", "-d", "5"]),
    (["convert"], "--dataset", "--dataset-id", "dataset_id", "7", 7, ["-i", "s", "--out", "o"]),
    (["convert"], "--quiet", "--no-progress", "no_progress", None, True, ["-i", "s", "--out", "o", "-d", "5"]),
    (["demo"], "--quiet", "--no-progress", "no_progress", None, True, []),
    (["organs"], "--quiet", "--no-progress", "no_progress", None, True, []),
    (["organs"], "--input", "--images", "images", "I", "I", []),
    (["evaluate-interactive"], "--input", "--data", "data", "D", "D", ["--out", "o"]),
    (["evaluate-interactive"], "--click-steps", "--steps", "steps", "0,1", "0,1", ["-i", "d", "--out", "o"]),
    (["heatmap"], "--click-step", "--step", "step", "3", 3, ["--pet", "p", "--clicks", "c", "--out", "o"]),
    (["predict"], "--click-step", "--step", "step", "3", 3, ["--out", "o"]),
    (["tracer", "train"], "--input", "--data", "data", "D", "D", ["--out", "o"]),
    (["tracer", "train"], "--num-folds", "--folds", "folds", "3", 3, ["-i", "d", "--out", "o"]),
    (["tracer", "predict"], "--tracer-weights", "--weights", "weights", "W", "W", ["--pet", "p"]),
    (["clicks", "simulate"], "--gt", "--label", "label", "L", "L", ["--pet", "p", "--out", "o"]),
    (["clicks", "simulate"], "--num-clicks", "--n", "n", "4", 4, ["--gt", "l", "--pet", "p", "--out", "o"]),
    (["organs"], "--gt", "--labels", "labels", "L", "L", ["--out", "o"]),
    (["slurm", "train"], "--input", "--tracer-data", "tracer_data", "D", "D", ["--dataset-fdg", "1"]),
    (["slurm", "train"], "--out", "--tracer-out", "tracer_out", "W", "W", ["--dataset-fdg", "1"]),
]


def _subparser(words: list[str]) -> argparse.ArgumentParser:
    parser = build_parser()
    for w in words:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[w]
    return parser


@pytest.mark.parametrize("words, new, old, dest, typed, value, rest", RENAMES,
                         ids=[f"{' '.join(r[0])} {r[2]}" for r in RENAMES])
def test_old_spelling_is_a_hidden_alias(words, new, old, dest, typed, value, rest, capsys):
    tail = [typed] if typed is not None else []
    args_new = build_parser().parse_args([*words, new, *tail, *rest])
    assert getattr(args_new, dest) == value
    assert capsys.readouterr().err == ""
    args_old = build_parser().parse_args([*words, old, *tail, *rest])
    assert getattr(args_old, dest) == value
    assert f"note: {old} is an old spelling of {new}" in capsys.readouterr().err
    help_text = _subparser(words).format_help()
    assert new in help_text
    assert old not in help_text.replace(new, "")  # not shown, also not in the usage line


def _sections() -> dict[str, str]:
    """docs/CLI.md split at its ``## `` headings: {heading: text}."""
    out, head = {}, ""
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            head = line[3:].strip()
        out[head] = out.get(head, "") + line + "\n"
    return out


def _rows(text: str) -> list[list[str]]:
    """The cells of every markdown table row of ``text`` (header and rule rows left out)."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]])
    return [r for r in rows if r and r[0] not in ("idea", "command", "argument")]


def _flags(text: str) -> set[str]:
    """The option strings written in the backquoted spans of ``text`` (``-i/--input DIR`` -> -i, --input)."""
    found = set()
    for span in re.findall(r"`([^`]+)`", text):
        if not span.startswith("python3 "):
            found |= set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", span))
    return found


def _commands() -> dict[str, argparse.ArgumentParser]:
    return {" ".join(words): p for words, p in commands(build_parser())}


def _shown_and_hidden(parser: argparse.ArgumentParser) -> tuple[set[str], set[str]]:
    shown, hidden = set(), set()
    for opt in options(parser):
        shown |= set(opt.shown)
        hidden |= set(opt.hidden)
    return shown, hidden


def _nnunet_predict_options() -> set[str]:
    """The option strings of the ``nnUNetv2_predict_quantif`` console script, read from its ``--help``."""
    import contextlib
    import io
    from importlib.metadata import entry_points

    (entry,) = [e for e in entry_points(group="console_scripts") if e.name == "nnUNetv2_predict_quantif"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        entry.load()(["--help"])
    return set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", out.getvalue()))


def test_generated_options_match_the_parsers():
    """The options part of docs/CLI.md is what ``python3 -m nnunet_quantif.cli.reference`` writes now."""
    page = DOC.read_text(encoding="utf-8")
    assert update_page(page, build_parser()) == page, \
        "docs/CLI.md's options differ from the parsers: run python3 -m nnunet_quantif.cli.reference"


def test_reference_command_rewrites_only_the_generated_part(tmp_path, capsys):
    from nnunet_quantif.cli.reference import BEGIN, END, main

    page = tmp_path / "CLI.md"
    page.write_text(f"# hand-written\n\n{BEGIN}\nstale\n{END}\n\nafter\n", encoding="utf-8")
    assert main([str(page), "--check"]) == 1 and "differ" in capsys.readouterr().err
    assert main([str(page)]) == 0
    text = page.read_text(encoding="utf-8")
    assert text.startswith(f"# hand-written\n\n{BEGIN}\n### quantif\n") and text.endswith(f"{END}\n\nafter\n")
    assert "stale" not in text and "| `--num-clicks N` |" in text and "`--n N`" not in text
    assert main([str(page), "--check"]) == 0
    page.write_text("no markers\n", encoding="utf-8")
    assert main([str(page)]) == 1 and "markers" in capsys.readouterr().err
    assert page.read_text(encoding="utf-8") == "no markers\n"


def test_every_option_of_every_command_is_documented_under_its_command():
    text = _sections()["Every option of every command"]
    documented: dict[str, set[str]] = {}
    for block in text.split("\n### quantif")[1:]:
        name, _, body = block.partition("\n")
        documented[name.strip()] = _flags("\n".join(r[0] for r in _rows(body)))
    parsers = _commands()
    n_options = 0
    for name, parser in parsers.items():
        shown, hidden = _shown_and_hidden(parser)
        n_options += len(shown)
        if not options(parser):
            continue
        assert name in documented, f"quantif {name} has no section in docs/CLI.md"
        assert shown <= documented[name], f"quantif {name}: {sorted(shown - documented[name])} not documented"
        assert documented[name] <= shown, f"quantif {name}: {sorted(documented[name] - shown)} documented " \
                                          "but not an option shown in --help (unknown or a hidden alias)"
    assert set(documented) <= set(parsers), f"sections of no command: {sorted(set(documented) - set(parsers))}"
    assert n_options > 200 and {"clicks simulate", "slurm train", "tracer train", "predict"} <= set(documented)


def test_every_option_named_in_the_vocabulary_exists_and_none_is_an_old_spelling():
    sections = _sections()
    shown, hidden = set(), set()
    for parser in _commands().values():
        s, h = _shown_and_hidden(parser)
        shown |= s
        hidden |= h
    known = shown | _nnunet_predict_options() | {"-h", "--help"}
    for head, text in sections.items():
        if head == "Every option of every command":
            continue
        flags = _flags(text)
        if head.startswith("Old spellings"):
            assert flags <= known | hidden, f"docs/CLI.md, {head}: unknown {sorted(flags - known - hidden)}"
            continue
        assert flags <= known, f"docs/CLI.md, {head or 'top'}: {sorted(flags - known)} is no option " \
                               + ("shown in --help (an old spelling written as the vocabulary)"
                                  if flags - known <= hidden else "of any command")


def test_the_vocabulary_table_names_commands_that_have_the_option():
    """Each row's `where` cell lists commands that take (at least one of) the row's spellings."""
    parsers = _commands()
    rows = _rows(_sections()[""])  # the table under the page's title
    checked = 0
    for _idea, spelling, where, *_ in rows:
        flags = _flags(spelling)
        for name in re.findall(r"`([a-z][a-z -]*)`", where):
            if name in parsers:
                shown, _ = _shown_and_hidden(parsers[name])
                assert flags & shown, f"docs/CLI.md says quantif {name} takes {spelling}; its options do not"
                checked += 1
    assert checked > 50


def test_old_spellings_table_matches_the_parsers():
    """Every hidden alias is a row (command, old, new) whose new spelling is the option's shown strings."""
    parsers = _commands()
    table = set()
    for cmds, old_cell, new_cell in _rows(_sections()["Old spellings (hidden aliases)"]):
        old, new = (re.search(r"`([^`]+)`", c).group(1) for c in (old_cell, new_cell))
        if " " in old:
            continue  # an old value (`--device gpu`), not an option
        for name in re.findall(r"`([^`]+)`", cmds):
            table.add((name, old, new))
    aliases = set()
    for name, parser in parsers.items():
        for opt in options(parser):
            for old in opt.hidden:
                aliases.add((name, old, "/".join(opt.shown)))
    assert aliases == table, (f"in the parsers, not in docs/CLI.md: {sorted(aliases - table)}; "
                              f"in docs/CLI.md, not in the parsers: {sorted(table - aliases)}")
    assert len(aliases) >= len(RENAMES)


def test_organs_device_takes_the_nnunet_spelling(capsys):
    assert build_parser().parse_args(["organs", "--device", "cuda"]).device == "cuda"
    assert build_parser().parse_args(["organs", "--device", "gpu"]).device == "cuda"  # TotalSegmentator's word
    with pytest.raises(SystemExit):
        build_parser().parse_args(["organs", "--device", "tpu"])
    assert "invalid device 'tpu' (choose from cuda, cpu, mps)" in capsys.readouterr().err
