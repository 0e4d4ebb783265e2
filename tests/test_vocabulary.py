"""One vocabulary across the quantif commands; old spellings are hidden aliases (nnunet_quantif.cli.vocabulary)."""

from __future__ import annotations

import argparse

import pytest

from nnunet_quantif.cli import build_parser
from nnunet_quantif.cli.vocabulary import HIDDEN_ALIASES_ATTR

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


def test_every_hidden_alias_is_listed_in_docs():
    """docs/CLI.md names each old spelling beside its new one, so the aliases can be removed knowingly."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "CLI.md").read_text()
    parser = build_parser()
    found = []

    def walk(p: argparse.ArgumentParser) -> None:
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for sub in set(a.choices.values()):
                    walk(sub)
            for old in getattr(a, HIDDEN_ALIASES_ATTR, ()):
                found.append(old)
                assert f"`{old}`" in doc, f"{p.prog} {old} is not in docs/CLI.md"
    walk(parser)
    assert len(found) >= len(RENAMES) - 2  # --no-progress is one spelling in three commands


def test_organs_device_takes_the_nnunet_spelling(capsys):
    assert build_parser().parse_args(["organs", "--device", "cuda"]).device == "cuda"
    assert build_parser().parse_args(["organs", "--device", "gpu"]).device == "cuda"  # TotalSegmentator's word
    with pytest.raises(SystemExit):
        build_parser().parse_args(["organs", "--device", "tpu"])
    assert "invalid device 'tpu' (choose from cuda, cpu, mps)" in capsys.readouterr().err
