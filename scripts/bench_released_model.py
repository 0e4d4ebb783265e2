#!/usr/bin/env python
"""Benchmark: an imported QuantIF-authors release at ResEnc-L 192³ on a CPU, predict and live session.

A replica of the authors' release (their layout, names and network, random weights; ``tests/_replicas.py``)
is written with one FDG fold at ResEnc-L 192³ and imported with ``quantif model import quantif-authors``
(the import is timed too). One phantom (``--size``, default ``full``: 400 x 400 x 326 voxels at
2.036 x 2.036 x 3 mm, the replica's spacing, so nnU-Net does not resample) is then segmented in one of two
modes, each in its own process so that the peak RSS is the mode's own:

* ``predict``: :meth:`QuantIFPipeline.predict_arrays` (the path of ``quantif predict`` without file reading
  and writing): the contract's heatmap, nnU-Net preprocessing, every tile, post-processing. Fold 0, no
  mirroring, the model's tile step (0.6), ``--precision`` and ``--tile-batch``.
* ``session``: :class:`~nnunet_quantif.interactive.Session` (``--lean`` for the memory-lean mode): the open
  (every tile) and ``--clicks`` clicks, alternating a lesion centre and a random body voxel; seconds and
  tiles per click.

Printed: the seconds, the tiles and the peak RSS of the process (``ru_maxrss``) as JSON.

Usage: python scripts/bench_released_model.py --mode predict|session [--size full] [--precision bf16]
       [--tile-batch auto] [--clicks 3] [--lean] [--threads N] [--work DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--mode", choices=("predict", "session"), required=True)
    ap.add_argument("--size", choices=("small", "medium", "full"), default="full")
    ap.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"), default="bf16")
    ap.add_argument("--tile-batch", default="auto", help="tiles per forward, or auto")
    ap.add_argument("--clicks", type=int, default=3)
    ap.add_argument("--lean", action="store_true", help="session: the memory-lean mode")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", metavar="DIR", help="keep the replica and its import here (default: a temp folder)")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = ap.parse_args(argv)

    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    from _replicas import write_quantif_release

    from nnunet_quantif.inference.pipeline import QuantIFPipeline
    from nnunet_quantif.interactive import Session
    from nnunet_quantif.phantoms import generate_case
    from nnunet_quantif.releases import import_release
    from nnunet_quantif.testing.click_sequence import alternating_clicks

    if args.threads:
        torch.set_num_threads(args.threads)
    tile_batch = None if args.tile_batch == "auto" else int(args.tile_batch)
    case = generate_case("fdg", size=args.size, seed=args.seed, healthy=False)
    g = case.geometry
    clicks = alternating_clicks(case, args.clicks, args.seed)
    out: dict = {"mode": args.mode, "size": args.size, "shape_zyx": list(g.shape), "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        dst = work / "dst"
        if not (dst / "fdg" / "fold_0" / "checkpoint_final.pth").is_file():
            write_quantif_release(work / "src", folds=(0,), sizes={"fdg": "resencl"}, n_tracer_files=1)
            t = time.perf_counter()
            import_release("quantif-authors", work / "src", dst)
            out["import_s"] = time.perf_counter() - t
        pipe = QuantIFPipeline(dst / "fdg", None, folds=(0,), mirroring="none", device="cpu",
                               precision=args.precision, tile_batch=tile_batch).load()
        out.update(precision=args.precision, tile_batch=args.tile_batch, tile_step_size=pipe.tile_step_size)
        if args.mode == "predict":
            t = time.perf_counter()
            result = pipe.predict_arrays(case.ct, case.pet, g, None, tracer="fdg")
            out.update(predict_s=time.perf_counter() - t, lesion_voxels=result.lesion_voxels)
        else:
            session = Session(pipeline=pipe, lean=args.lean)
            t = time.perf_counter()
            session.open(case.ct, case.pet, g, tracer="fdg")
            out.update(lean=args.lean, open_s=time.perf_counter() - t, tiles_total=session.last_update.tiles_total)
            seconds, tiles = [], []
            for kind, xyz in clicks:
                session.add_click(xyz, kind)
                seconds.append(session.last_update.seconds)
                tiles.append(session.last_update.tiles_run)
                print(f"{kind:10s} {xyz}: {seconds[-1]:.1f} s, {tiles[-1]}/{session.last_update.tiles_total} tiles",
                      flush=True)
            out.update(click_s=seconds, click_tiles=tiles, median_click_s=statistics.median(seconds))
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
