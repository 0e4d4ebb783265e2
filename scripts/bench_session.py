#!/usr/bin/env python
"""Benchmark: seconds per click of an interactive session, incremental vs a full re-prediction.

A randomly initialised tiny nnU-Net model (``write_random_model``, 3-stage plain U-Net, cubic
patch ``--patch``, one fold, no mirroring, target spacing = the phantom's, so nnU-Net does not
resample) segments one phantom (``quantif phantom``'s generator, ``--size``). The clicks alternate
tumor (a lesion's centre) and background (a random body voxel). For each click:

* incremental: :meth:`nnunet_quantif.interactive.Session.add_click` (heatmap, preprocessing of the
  changed box, the tiles it touches, resampling back, post-processing);
* full: :meth:`QuantIFPipeline.predict_arrays` with the same clicks (heatmap, nnU-Net
  preprocessing, every tile, resampling back, post-processing), the path of ``quantif predict``
  without the file reading and writing.

Both masks are compared (they must be equal). Printed: the medians, the ratio, tiles per click and
the peak RSS of the process (the session and the pipeline together).

``--lean`` runs the memory-lean session (no stored tile logits, :class:`~nnunet_quantif.interactive.Session`).

Usage: python scripts/bench_session.py [--size small] [--patch 32] [--clicks 10] [--full-clicks N] [--threads 1]
       [--lean]
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--size", choices=("small", "medium", "full"), default="small")
    ap.add_argument("--patch", type=int, default=32, help="cubic patch edge (multiple of 4)")
    ap.add_argument("--clicks", type=int, default=10)
    ap.add_argument("--full-clicks", type=int, default=None, metavar="N",
                    help="run the full re-prediction (and the mask check) for the first N clicks only (default: all)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--lean", action="store_true", help="the memory-lean session (no stored tile logits)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from nnunet_quantif.inference.pipeline import QuantIFPipeline
    from nnunet_quantif.interactive import Session
    from nnunet_quantif.phantoms import generate_case
    from nnunet_quantif.testing.click_sequence import alternating_clicks
    from nnunet_quantif.testing.random_model import write_random_model

    torch.set_num_threads(args.threads)
    case = generate_case("fdg", size=args.size, seed=args.seed, healthy=False)
    g = case.geometry
    clicks = alternating_clicks(case, args.clicks, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        model = write_random_model(Path(tmp) / "model", folds=(0,), patch_size=(args.patch,) * 3,
                                   spacing_zyx=g.spacing_zyx, seed=3)
        pipe = QuantIFPipeline(model, None, folds=(0,), mirroring="none", device="cpu").load()
        session = Session(pipeline=pipe, lean=args.lean)
        t0 = time.perf_counter()
        session.open(case.ct, case.pet, g, tracer="fdg")
        open_s = time.perf_counter() - t0
        inc, full, tiles, same = [], [], [], []
        for k, (kind, xyz) in enumerate(clicks):
            mask = session.add_click(xyz, kind).copy()
            inc.append(session.last_update.seconds)
            tiles.append(session.last_update.tiles_run)
            line = (f"{kind:10s} {xyz}: incremental {inc[-1]:.2f} s ({tiles[-1]}/{session.last_update.tiles_total} "
                    "tiles)")
            if args.full_clicks is None or k < args.full_clicks:
                t = time.perf_counter()
                ref = pipe.predict_arrays(case.ct, case.pet, g, session.clicks, tracer="fdg")
                full.append(time.perf_counter() - t)
                same.append(bool(np.array_equal(mask, ref.mask)))
                line += f", full {full[-1]:.2f} s, same mask {same[-1]}"
            print(line, flush=True)
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    out = {"size": args.size, "shape_zyx": list(g.shape), "patch": args.patch, "threads": args.threads,
           "lean": args.lean,
           "clicks": len(clicks), "full_clicks": len(full), "open_s": open_s,
           "median_incremental_s": statistics.median(inc),
           "median_full_s": statistics.median(full), "speedup": statistics.median(full) / statistics.median(inc),
           "median_tiles": statistics.median(tiles), "tiles_total": session.last_update.tiles_total,
           "all_masks_equal": all(same), "peak_rss_gb": rss_gb}
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0 if all(same) else 1


if __name__ == "__main__":
    sys.exit(main())
