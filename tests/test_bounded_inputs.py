"""Bounded inputs: click counts, click-file size and nesting, and the length of error messages."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from nnunet_quantif.cli import build_parser
from nnunet_quantif.cli import main as quantif
from nnunet_quantif.clicks import (
    DEFAULT_MAX_CLICKS,
    MAX_JSON_DEPTH,
    json_depth,
    load_click_json,
    parse_clicks,
    read_clicks,
)
from nnunet_quantif.errors import MAX_MESSAGE_CHARS, ClickError, ConfigError, InputFileError, cut_message
from nnunet_quantif.io import Geometry, write_image

ONE_MILLION = 1_000_000


def _challenge_text(n: int) -> str:
    return '{"points": [' + ", ".join(['{"point": [1, 2, 3], "name": "tumor"}'] * n) + "]}"


def _simple_text(n: int) -> str:
    return '{"tumor": [' + ",".join(["[1,2,3]"] * n) + "]}"


@pytest.mark.parametrize("text", [_challenge_text, _simple_text], ids=["challenge", "simple"])
def test_a_million_clicks_are_refused_within_5_s(tmp_path, text):
    path = tmp_path / "many.json"
    path.write_text(text(ONE_MILLION))
    t0 = time.perf_counter()
    with pytest.raises(ClickError, match="--max-clicks") as info:
        read_clicks(path)
    assert time.perf_counter() - t0 < 5.0
    assert len(str(info.value)) <= MAX_MESSAGE_CHARS


def test_a_million_clicks_in_memory_are_counted_before_parsing():
    obj = {"points": [{"point": [1, 2, 3], "name": "tumor"}] * ONE_MILLION}
    t0 = time.perf_counter()
    with pytest.raises(ClickError, match=f"{ONE_MILLION} clicks, more than the limit of {DEFAULT_MAX_CLICKS}"):
        parse_clicks(obj, "obj")
    with pytest.raises(ClickError, match="more than the limit of 5"):
        parse_clicks({"tumor": [[1, 2, 3]] * 3, "background": [[1, 2, 3]] * 3}, "obj", max_clicks=5)
    assert time.perf_counter() - t0 < 5.0
    assert len(parse_clicks({"tumor": [[1, 2, 3]] * 3, "background": [[1, 2, 3]] * 2}, "obj", max_clicks=5)) == 5
    assert len(parse_clicks({"tumor": [[1, 2, 3]] * 2000}, "obj", max_clicks=None)) == 2000  # no limit


def test_the_limit_is_the_callers(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(_challenge_text(30))
    assert len(read_clicks(path)) == 30
    with pytest.raises(ClickError, match="30 clicks, more than the limit of 20"):
        read_clicks(path, max_clicks=20)
    big = tmp_path / "big.json"
    big.write_text(_challenge_text(DEFAULT_MAX_CLICKS + 1))
    with pytest.raises(ClickError, match="--max-clicks"):
        read_clicks(big)
    assert len(read_clicks(big, max_clicks=DEFAULT_MAX_CLICKS + 1)) == DEFAULT_MAX_CLICKS + 1


def test_the_file_size_is_checked_before_reading(tmp_path):
    path = tmp_path / "padded.json"
    path.write_text('{"points": []}' + " " * 2_000_000)  # few clicks, but far larger than 1000 clicks need
    with pytest.raises(ClickError, match=r"click file of \d+ bytes, larger than the \d+ bytes allowed"):
        read_clicks(path)
    assert len(read_clicks(path, max_clicks=None)) == 0


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 200_000])
def test_deep_nesting_is_refused_without_recursion_error(tmp_path, depth):
    path = tmp_path / "deep.json"
    path.write_text("[" * depth + "]" * depth)
    with pytest.raises(ClickError, match=f"nested {depth} deep"):
        read_clicks(path)
    path.write_text('{"points": ' + "[" * depth)  # unterminated too
    with pytest.raises(ClickError, match="nested"):
        read_clicks(path)


def test_json_depth_ignores_brackets_in_strings():
    assert json_depth(b"") == 0
    assert json_depth(b'{"points": [{"point": [1, 2, 3], "name": "tumor"}]}') == 4
    assert json_depth(b'{"a": "[[[[{{{{"}') == 1
    assert json_depth(b'{"a": "\\"[[[", "b": "x\\\\", "c": [[]]}') == 3  # escaped quote; escaped backslash
    text = json.dumps({"p": [["]]", {"q": "[{"}]]})
    assert json_depth(text.encode()) == 4


def test_deep_nesting_through_the_cli_is_one_line(tmp_path, capsys):
    pet = write_image(np.ones((4, 5, 6), np.float32), Geometry.from_shape((4, 5, 6), (2.0, 2.0, 2.0)),
                      tmp_path / "pet.nii.gz")
    clicks = tmp_path / "deep.json"
    clicks.write_text("[" * 200_000 + "]" * 200_000)
    assert quantif(["heatmap", "--pet", str(pet), "--clicks", str(clicks), "--out", str(tmp_path / "h.nii.gz")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("quantif: error: ") and "nested 200000 deep" in err and "Traceback" not in err
    assert not (tmp_path / "h.nii.gz").exists()


def test_a_point_with_millions_of_coordinates_gives_a_short_message(tmp_path):
    n = 5_000_000
    with pytest.raises(ClickError, match=f"expected 3 coordinates \\[x, y, z\\], got {n}") as info:
        parse_clicks({"points": [{"point": [0] * n, "name": "tumor"}]}, "obj")
    assert len(str(info.value)) <= MAX_MESSAGE_CHARS
    path = tmp_path / "long.json"
    path.write_text('{"tumor": [[' + ",".join(["7"] * n) + "]]}")
    with pytest.raises(ClickError, match="expected 3 coordinates") as info:
        read_clicks(path, max_clicks=None)
    assert len(str(info.value)) <= MAX_MESSAGE_CHARS
    with pytest.raises(ClickError) as info:  # a huge value in another place of the file
        parse_clicks({"points": [{"point": [1, 2, 3], "name": "x" * n}]}, "obj")
    assert len(str(info.value)) <= MAX_MESSAGE_CHARS
    with pytest.raises(ClickError) as info:
        parse_clicks({"tumor": [["x" * n, 1, 2]]}, "obj")
    assert len(str(info.value)) <= MAX_MESSAGE_CHARS


def test_messages_are_cut():
    assert cut_message("short") == "short"
    long = cut_message("x" * 100_000)
    assert len(long) == MAX_MESSAGE_CHARS and long.endswith(f"[{100_000 - MAX_MESSAGE_CHARS} more characters]")
    assert len(str(ClickError("y" * 100_000))) == MAX_MESSAGE_CHARS


def test_a_failed_case_line_is_cut():
    from nnunet_quantif.inference.pipeline import CaseResult

    line = CaseResult(case="c", status="failed", error="e" * 100_000).summary_line()
    assert line.startswith("c: FAILED: eee") and len(line) == len("c: FAILED: ") + MAX_MESSAGE_CHARS


def test_the_cli_cuts_every_error_message(monkeypatch, capsys):
    import argparse

    import nnunet_quantif.cli as cli

    def fail(args):
        raise ConfigError("z" * 1_000_000)

    class Parser:
        def parse_args(self, argv=None):
            return argparse.Namespace(func=fail, verbose=False)

    monkeypatch.setattr(cli, "build_parser", Parser)
    assert quantif([]) == 1
    err = capsys.readouterr().err
    assert err.startswith("quantif: error: zzz") and len(err) <= len("quantif: error: \n") + MAX_MESSAGE_CHARS


def _command_parsers():
    """Every ``quantif`` (sub)command parser by its command line, and nnUNetv2_predict_quantif's."""
    from nnunet_quantif.cli.nnunet_predict import build_parser as nnunet_parser

    parser = build_parser()
    out = {}

    def walk(p, name):
        out[name] = p
        for action in p._actions:
            if action.__class__.__name__ == "_SubParsersAction":
                for sub_name, sub in action.choices.items():
                    walk(sub, f"{name} {sub_name}".strip())

    walk(parser, "")
    out["nnUNetv2_predict_quantif"] = nnunet_parser()
    return out


@pytest.mark.parametrize("command", ["predict", "gc", "session", "heatmap", "evaluate-interactive",
                                     "clicks show", "view", "convert", "nnUNetv2_predict_quantif"])
def test_every_command_that_reads_clicks_has_max_clicks(command):
    parser = _command_parsers()[command]
    action = next((a for a in parser._actions if "--max-clicks" in a.option_strings), None)
    assert action is not None, command
    assert action.default == DEFAULT_MAX_CLICKS


def test_clicks_show_honours_max_clicks(tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text(_challenge_text(3))
    assert quantif(["clicks", "show", str(path), "--max-clicks", "2"]) == 1
    assert "3 clicks, more than the limit of 2" in capsys.readouterr().err
    assert quantif(["clicks", "show", str(path), "--max-clicks", "3"]) == 0
    assert "3 tumor, 0 background clicks" in capsys.readouterr().out


def test_a_clicks_path_that_is_a_folder_is_an_error(tmp_path):
    from nnunet_quantif.clicks import clicks_at_step
    from nnunet_quantif.inference.pipeline import grand_challenge, load_case_clicks

    folder = tmp_path / "clicks.json"
    folder.mkdir()
    with pytest.raises(ClickError, match="not a file"):
        load_click_json(folder)
    with pytest.raises(ClickError, match="not a file"):
        clicks_at_step(folder, missing_ok=True)
    with pytest.raises(ClickError, match="not a file"):
        load_case_clicks(folder, (4, 5, 6))
    assert len(load_case_clicks(tmp_path / "missing.json", (4, 5, 6))) == 0  # a missing file: no clicks

    inp = tmp_path / "input"
    geometry = Geometry.from_shape((4, 5, 6), (2.0, 2.0, 2.0))
    for kind in ("ct", "pet"):
        write_image(np.zeros((4, 5, 6), np.float32), geometry, inp / "images" / kind / f"{kind}-uuid.mha")
    (inp / "lesion-clicks.json").mkdir()

    class NoPrediction:
        def predict_case(self, *args, **kwargs):
            raise AssertionError("a folder of clicks must not reach the prediction")

    with pytest.raises(InputFileError, match="lesion-clicks.json: exists but is not a file"):
        grand_challenge(inp, tmp_path / "out", pipeline=NoPrediction())


def test_real_click_files_fit_the_limits(shipped_clicks_dir: Path):
    for path in sorted(shipped_clicks_dir.glob("*.json")):
        clicks = read_clicks(path)
        assert 0 < len(clicks) <= 20
        assert json_depth(path.read_bytes()) <= MAX_JSON_DEPTH
