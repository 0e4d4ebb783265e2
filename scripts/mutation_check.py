#!/usr/bin/env python3
"""Mutation check: inject a fixed list of plausible bugs, one at a time, and see whether the fast tests catch them.

Each mutation is one or more exact string replacements in one file of the package. The script copies the
working tree's package, configs and tests into a temporary folder, checks that ``import nnunet_quantif``
there resolves to the copy, runs the matching fast tests once unmutated (they must pass, or nothing can be
judged), then for each mutation restores the file, applies the replacements and runs its tests. A mutation
is *caught* when at least one of its tests fails. An anchor that is not found exactly once stops the script
(exit 2): the list must follow the code, not silently test nothing.

Usage::

    python scripts/mutation_check.py               # every mutation (a few minutes on 2 cores)
    python scripts/mutation_check.py --only M5,M7  # some of them
    python scripts/mutation_check.py --list        # the list, with files and tests

Exit status: 0 when every mutation was caught, 1 when one survived, 2 on a stale anchor or failing baseline.
Not part of CI's default run; run it after changing a test or the code a mutation touches.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    """One injected bug: ``edits`` are (anchor, replacement) pairs applied to ``path``; ``tests`` are pytest
    node ids (relative to the repository root) expected to catch it."""

    id: str
    title: str
    path: str
    edits: tuple[tuple[str, str], ...]
    tests: tuple[str, ...]


_PIPELINE_VS_STOCK = "tests/test_pipeline_vs_nnunet.py::test_quantif_predict_equals_stock_nnunet_plus_postprocess"

MUTATIONS: tuple[Mutation, ...] = (
    Mutation("M5", "click mapping between grids without the (x,y,z)->(z,y,x) reversal",
             "nnunet_quantif/clicks.py",
             (("dst.nearest_index(src.index_to_physical(zyx[::-1]))[::-1]",
               "dst.nearest_index(src.index_to_physical(zyx))"),),
             ("tests/test_conversion_click_mapping.py",)),
    Mutation("M6", "organ pseudo Dice computed as Jaccard (trainer validation)",
             "nnunet_quantif/training/trainers.py",
             (("dice = 2 * tp / (2 * tp + fp + fn)", "dice = tp / (tp + fp + fn)"),),
             ("tests/test_trainer_validation_metrics.py",)),
    Mutation("M7", "post-processing switched off inside the prediction pipeline",
             "nnunet_quantif/inference/pipeline.py",
             (("if st.postprocess:", "if False:"),),
             (_PIPELINE_VS_STOCK,)),
    Mutation("M9", "image direction not passed to the mirroring decision",
             "nnunet_quantif/inference/pipeline.py",
             (("direction=geometry.direction", "direction=None"),),
             ("tests/test_pipeline_vs_nnunet.py::test_one_axis_budget_mirrors_the_left_right_axis_of_the_image_direction",)),
    Mutation("M10", "predicted mask flipped in z and x before writing",
             "nnunet_quantif/inference/pipeline.py",
             (("write_image(result.mask, geometry,", "write_image(result.mask[::-1, :, ::-1].copy(), geometry,"),),
             (_PIPELINE_VS_STOCK,)),
    Mutation("M11", "the PET fed in the CT channel",
             "nnunet_quantif/heatmap_definition.py",
             (('image = ct if c.source == "ct" else pet', 'image = pet if c.source == "ct" else pet'),),
             (_PIPELINE_VS_STOCK,)),
    Mutation("C1", "metrics: 26-connected lesion components instead of 18",
             "nnunet_quantif/evaluation/metrics.py",
             (("CONNECTIVITY = 18", "CONNECTIVITY = 26"),),
             ("tests/test_evaluation.py",)),
    Mutation("C2", "heatmap gate at the fixed SUV tau instead of min(SUV at the click, tau)",
             "nnunet_quantif/heatmaps.py",
             (("np.where(pet[sl] >= thr, g, 0.0)", "np.where(pet[sl] >= float(suv_gate), g, 0.0)"),),
             ("tests/test_heatmaps.py",)),
    Mutation("C3", "post-processing size threshold off by one (< min_voxels became <=)",
             "nnunet_quantif/inference/postprocessing.py",
             (("remove = (counts < threshold) &", "remove = (counts <= threshold) &"),),
             ("tests/test_postprocessing.py",)),
    Mutation("C4", "mirroring order reversed (left-right dropped first, head-foot kept)",
             "nnunet_quantif/inference/mirroring.py",
             (('KEEP_ORDER: tuple[str, ...] = ("LR", "AP", "SI")',
               'KEEP_ORDER: tuple[str, ...] = ("SI", "AP", "LR")'),),
             ("tests/test_mirroring.py",)),
)


class StaleAnchor(RuntimeError):
    """An anchor of a mutation is not found exactly once in its file."""


def apply(mutation: Mutation, text: str) -> str:
    """``text`` with every edit of ``mutation`` applied; each anchor must occur exactly once."""
    for anchor, replacement in mutation.edits:
        n = text.count(anchor)
        if n != 1:
            raise StaleAnchor(f"{mutation.id}: anchor {anchor!r} found {n} times in {mutation.path} "
                              "(update MUTATIONS in scripts/mutation_check.py to follow the code)")
        text = text.replace(anchor, replacement)
    return text


def make_copy(dest: Path) -> None:
    """Copy the working tree's package, configs, tests and project files (not .git, caches, build output)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".pytest_cache", ".hypothesis")
    for name in ("nnunet_quantif", "tests", "configs"):
        shutil.copytree(REPO / name, dest / name, ignore=ignore, symlinks=True)
    for name in ("pyproject.toml", "setup.py", "README.md"):
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, dest / name)
    # installed as nnunet_quantif.configs (package_dir); inside the copy it must resolve without the install
    if not (dest / "nnunet_quantif" / "configs").exists():
        shutil.copytree(REPO / "configs", dest / "nnunet_quantif" / "configs", ignore=ignore)


def copy_env(copy: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(copy), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("PYTEST_ADDOPTS", None)
    return env


def check_import(copy: Path, env: dict[str, str]) -> str:
    """Where ``nnunet_quantif`` (and its configs) import from when run in the copy; must be the copy."""
    out = subprocess.run([sys.executable, "-c", "import nnunet_quantif, nnunet_quantif.configs as c; "
                          "print(nnunet_quantif.__file__); print(list(c.__path__)[0])"],
                         cwd=copy, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"cannot import nnunet_quantif in the copy:\n{out.stderr[-2000:]}")
    paths = out.stdout.split()
    for p in paths:
        if not Path(p).resolve().is_relative_to(copy.resolve()):
            raise RuntimeError(f"nnunet_quantif resolves to {p}, not to the copy {copy}")
    return paths[0]


_FAILED = re.compile(r"^(FAILED|ERROR) (\S+)", re.M)


def run_tests(copy: Path, env: dict[str, str], tests: tuple[str, ...], timeout: float) -> tuple[int, list[str], str]:
    """Run ``tests`` in the copy; returns (exit status, failing test ids, output tail)."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow", "-rfE",
           "--maxfail=3", *tests]
    try:
        out = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 124, ["(timed out)"], ""
    text = out.stdout + out.stderr
    failing = [m.group(2) for m in _FAILED.finditer(text)]
    if out.returncode not in (0, 1) and not failing:
        failing = [f"(pytest exit {out.returncode})"]
    return out.returncode, failing, text[-3000:]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", help="comma-separated mutation ids (default: all)")
    p.add_argument("--list", action="store_true", help="print the mutations and exit")
    p.add_argument("--keep", action="store_true", help="keep the temporary copy")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per test run (default 600)")
    args = p.parse_args(argv)

    mutations = list(MUTATIONS)
    if args.only:
        wanted = {s.strip() for s in args.only.split(",") if s.strip()}
        unknown = wanted - {m.id for m in MUTATIONS}
        if unknown:
            p.error(f"unknown mutation id(s): {', '.join(sorted(unknown))}")
        mutations = [m for m in MUTATIONS if m.id in wanted]
    if args.list:
        for m in mutations:
            print(f"{m.id:4} {m.title}\n     {m.path}\n     tests: {' '.join(m.tests)}")
        return 0

    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="quantif-mutation-"))
    copy = tmp / "repo"
    try:
        make_copy(copy)
        pristine = {m.path: (copy / m.path).read_text() for m in mutations}
        try:  # every anchor is checked before anything runs
            for m in mutations:
                apply(m, pristine[m.path])
        except StaleAnchor as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        env = copy_env(copy)
        where = check_import(copy, env)
        print(f"package copy: {where}")

        all_tests = tuple(dict.fromkeys(t for m in mutations for t in m.tests))
        t0 = time.perf_counter()
        rc, failing, tail = run_tests(copy, env, all_tests, args.timeout)
        print(f"baseline (no mutation): {len(all_tests)} test target(s), exit {rc}, {time.perf_counter() - t0:.0f} s")
        if rc != 0:
            print(f"error: the tests fail without any mutation: {', '.join(failing)}\n{tail}", file=sys.stderr)
            return 2

        results = []
        for m in mutations:
            target = copy / m.path
            target.write_text(apply(m, pristine[m.path]))
            t0 = time.perf_counter()
            try:
                rc, failing, _ = run_tests(copy, env, m.tests, args.timeout)
            finally:
                target.write_text(pristine[m.path])
            results.append((m, rc != 0, time.perf_counter() - t0, failing))
            print(f"  {m.id:4} {'caught' if rc != 0 else 'SURVIVED'} ({time.perf_counter() - t0:.0f} s)", flush=True)

        print()
        print(f"{'id':4}  {'result':8}  {'s':>4}  {'bug':72}  failing tests")
        for m, caught, seconds, failing in results:
            names = ", ".join(f.split("::", 1)[-1] if "::" in f else f for f in failing) if caught else "-"
            print(f"{m.id:4}  {'caught' if caught else 'SURVIVED':8}  {seconds:4.0f}  {m.title[:72]:72}  {names}")
        n_caught = sum(1 for _, caught, _, _ in results if caught)
        print(f"\n{n_caught} of {len(results)} mutations caught; total {time.perf_counter() - t_start:.0f} s")
        return 0 if n_caught == len(results) else 1
    finally:
        if args.keep:
            print(f"copy kept in {copy}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
