"""Package, CLI and nnU-Net trainer discovery."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import pytest

import nnunet_quantif
from nnunet_quantif.cli import main


def _env_from_cli(workspace) -> dict[str, str]:
    out = subprocess.run([sys.executable, "-m", "nnunet_quantif", "env", "--workspace", str(workspace)],
                         check=True, capture_output=True, text=True).stdout
    env = {}
    for line in out.splitlines():
        assert line.startswith("export ")
        name, _, value = line[len("export "):].partition("=")
        # values are shell-quoted; let a shell unquote them
        env[name] = subprocess.run(["bash", "-c", f"printf %s {value}"], capture_output=True, text=True).stdout
    return env


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert nnunet_quantif.__version__ in capsys.readouterr().out


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "env" in out


def test_env_prints_exports(tmp_path):
    ws = tmp_path / "my ws"
    env = _env_from_cli(ws)
    assert env["nnUNet_raw"] == str(ws / "nnUNet_raw")
    assert env["nnUNet_preprocessed"] == str(ws / "nnUNet_preprocessed")
    assert env["nnUNet_results"] == str(ws / "nnUNet_results")
    assert os.path.isdir(env["nnUNet_extTrainer"])


def test_trainer_discovery_through_ext_trainer(tmp_path, monkeypatch):
    env = _env_from_cli(tmp_path / "ws")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    cls = recursive_find_trainer_class_by_name("nnUNetTrainerQuantIF")
    assert cls.__name__ == "nnUNetTrainerQuantIF"
    assert cls.__module__.startswith("nnunet_quantif")
    assert pickle.loads(pickle.dumps(cls)) is cls


def test_trainer_not_found_without_ext_trainer(monkeypatch):
    monkeypatch.delenv("nnUNet_extTrainer", raising=False)
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    with pytest.raises(RuntimeError):
        recursive_find_trainer_class_by_name("nnUNetTrainerQuantIF")


def test_library_error_is_one_line_on_stderr(tmp_path):
    """A QuantIFError from a subcommand becomes one stderr line and exit code 1, no traceback."""
    import argparse

    from nnunet_quantif import cli
    from nnunet_quantif.errors import InputFileError

    def failing(args: argparse.Namespace) -> int:
        raise InputFileError(f"{tmp_path}/x.nii.gz: file not found")

    parser = cli.build_parser()
    ns = parser.parse_args(["env"])
    ns.func = failing
    orig = cli.build_parser

    class P:
        def parse_args(self, argv):
            return ns

        def print_help(self):  # pragma: no cover
            pass

    cli.build_parser = lambda: P()
    try:
        import contextlib
        import io
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main([])
    finally:
        cli.build_parser = orig
    assert code == 1
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1 and "x.nii.gz: file not found" in lines[0] and "Traceback" not in lines[0]


@pytest.mark.parametrize("argv, flag", [
    (["heatmap", "--pet", "p.nii.gz", "--clicks", "c.json", "--out", "h.nii.gz", "--sigma-tumor", "-3"],
     "--sigma-tumor"),
    (["heatmap", "--pet", "p.nii.gz", "--clicks", "c.json", "--out", "h.nii.gz", "--sigma-tumor", "nan"],
     "--sigma-tumor"),
    (["heatmap", "--pet", "p.nii.gz", "--clicks", "c.json", "--out", "h.nii.gz", "--sigma-background", "inf"],
     "--sigma-background"),
    (["heatmap", "--pet", "p.nii.gz", "--clicks", "c.json", "--out", "h.nii.gz", "--suv-gate", "nan"], "--suv-gate"),
    (["heatmap", "--pet", "p.nii.gz", "--clicks", "c.json", "--out", "h.nii.gz", "--suv-gate", "-1"], "--suv-gate"),
    (["postprocess", "--mask", "m.nii.gz", "--pet", "p.nii.gz", "--out", "o.nii.gz", "--min-voxels", "-1"],
     "--min-voxels"),
    (["postprocess", "--mask", "m.nii.gz", "--pet", "p.nii.gz", "--out", "o.nii.gz", "--suv-max", "nan"], "--suv-max"),
    (["postprocess", "--mask", "m.nii.gz", "--pet", "p.nii.gz", "--out", "o.nii.gz", "--min-volume-ml", "-1"],
     "--min-volume-ml"),
    (["convert", "-i", "s", "--out", "o", "-d", "500", "--workers", "0"], "--workers"),
    (["clicks", "simulate", "--gt", "l.nii.gz", "--out", "c.json", "--seed", "-1"], "--seed"),
    (["demo", "--seed", "-1"], "--seed"),
])
def test_out_of_range_numbers_are_refused_by_the_parser(argv, flag, capsys):
    """Negative, NaN and infinite values give argparse's one error line naming the flag, not a traceback later."""
    from nnunet_quantif.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert flag in err and ("must be" in err or "not a finite number" in err), err


def test_output_folders_and_files_are_checked_before_work(tmp_path, capsys):
    """`evaluate --out FILE`, `convert --out FILE` and a folder as an image output are one line each, before any
    input is read (the inputs here do not exist)."""
    from nnunet_quantif.cli import main

    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    (tmp_path / "dir.nii.gz").mkdir()
    runs = [
        (["evaluate", "--pred", "nope", "--gt", "nope", "--out", str(a_file)], "existing file"),
        (["evaluate-interactive", "-i", "nope", "--no-model", "--out", str(a_file)], "existing file"),
        (["convert", "-i", "nope", "--out", str(a_file), "-d", "500"], "existing file"),
        (["postprocess", "--mask", "m.nii.gz", "--pet", "p.nii.gz", "--out", str(tmp_path / "dir.nii.gz")],
         "existing folder"),
        (["heatmap", "--pet", "p.nii.gz", "--clicks", "c.json", "--out", str(tmp_path / "h.png")],
         "unknown output image ending"),
        (["clicks", "simulate", "--gt", "l.nii.gz", "--pet", "p.nii.gz", "--out", str(tmp_path / "dir.nii.gz")],
         "existing folder"),
        (["phantom", "--out", str(a_file), "--fdg", "1"], "existing file"),
        (["tracer", "train", "-i", "nope", "--out", str(a_file)], "existing file"),
        (["pretrained", "convert", "--checkpoint", "c.pth", "--plans", "p.json", "--out", str(tmp_path / "dir.nii.gz")],
         "existing folder"),
        (["organs", "--out", str(a_file), "--gt", "nope"], "existing file"),
        (["demo", "--out", str(a_file)], "existing file"),
    ]
    for argv, match in runs:
        assert main(argv) == 1, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and match in err[0], (argv, err)
