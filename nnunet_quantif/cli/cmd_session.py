"""``quantif session``: interactive click refinement in a terminal (commands on stdin).

Commands, one per line (``#`` starts a comment):

* ``tumor X Y Z`` / ``background X Y Z``: add a click at voxel (x, y, z), as in the click files;
* ``stroke tumor|background X Y Z X Y Z ...``: add a stroke, its voxels (x, y, z) on one slice;
* ``undo``: remove the latest click or the whole latest stroke (or undo a ``reset``); ``reset``: remove every
  click and stroke;
* ``save PATH``: write the current mask (``.nii.gz``, ``.nii`` or ``.mha``) with the case's geometry, and beside
  it the interactions as ``<case>_clicks.json`` (the autoPET V JSON: every voxel a point, in order) and
  ``<case>_interactions.json`` (our form, with each stroke's id and the order);
* ``stats``: print the per-lesion table (CSV, as ``quantif stats``) and the case totals;
* ``quit`` (or end of input).

After each click the command prints the lesion count, the totals and the seconds the update took.
A bad line prints an error on stderr and the session goes on.
"""

from __future__ import annotations

import argparse
import sys
import time

from ..errors import ConfigError, QuantIFError, cut_message
from .cmd_predict import add_model_arguments, build_pipeline

HELP = ("commands: tumor X Y Z | background X Y Z | stroke tumor|background X Y Z X Y Z ... | undo | reset | "
        "save PATH | stats | quit  (voxel indices in image order x, y, z)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "session",
        help="interactive click refinement: clicks and strokes on stdin, mask and lesion table updated per click",
        description="Open one case (--ct/--pet), predict step 0, then read commands on stdin: "
                    + HELP + ". Each click re-runs only the sliding-window tiles it changes; the mask is the "
                    "one 'quantif predict' gives for the same clicks. Prints the lesion summary and the "
                    "seconds per click.",
    )
    p.add_argument("--ct", required=True, metavar="CT", help="CT image (HU) on the PET grid")
    p.add_argument("--pet", required=True, metavar="PET", help="PET image (SUV)")
    p.add_argument("--full", action="store_true", help="re-run every tile on each click (for comparisons)")
    p.add_argument("--lean", action="store_true",
                   help="memory-lean: keep no per-tile logits, only each fold's accumulator (2 bytes per label and "
                        "voxel instead of about 32 at step 0.5); a click re-runs the tiles around the ones it "
                        "changes, with the same mask")
    add_model_arguments(p)
    p.set_defaults(func=run)


def _summary(session) -> str:
    stats = session.lesions
    return (f"{stats.n_lesions} lesion(s), total MTV {stats.total_mtv_ml:.3f} ml, "
            f"total TLG {stats.total_tlg:.3f}")


def _update_line(session, what: str) -> str:
    u = session.last_update
    return (f"{what}: {_summary(session)}; {u.seconds:.3f} s ({u.mode}, {u.tiles_run}/{u.tiles_total} tiles)")


def _xyz(words: list[str]) -> list[int]:
    if len(words) != 3:
        raise ConfigError(f"a click needs 3 voxel indices X Y Z, got {len(words)}")
    try:
        return [int(w) for w in words]
    except ValueError:
        raise ConfigError(cut_message(f"voxel indices must be integers, got {' '.join(words)}", 200)) from None


def _stroke_zyx(words: list[str]) -> list[list[int]]:
    """A stroke's voxels given as X Y Z X Y Z ... in array order (z, y, x)."""
    from ..io import Geometry

    if not words or len(words) % 3:
        raise ConfigError(f"a stroke needs voxel indices X Y Z X Y Z ..., got {len(words)} numbers")
    return [[int(v) for v in Geometry.to_array_order(_xyz(words[i:i + 3]))] for i in range(0, len(words), 3)]


def run(args: argparse.Namespace) -> int:
    from ..interactive import CLICK_KINDS, Session, save_interactions
    from ..io import write_image

    pipeline = build_pipeline(args, progress=False)
    session = Session(pipeline=pipeline, incremental=not args.full, lean=args.lean)
    session.open(args.ct, args.pet, tracer=args.tracer)
    print(f"opened {args.pet} (tracer {session.tracer}, {session.last_update.tiles_total} tiles)", flush=True)
    print(_update_line(session, "step 0"), flush=True)
    print(HELP, flush=True)
    for raw in sys.stdin:
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        cmd, *rest = line.split()
        cmd = cmd.lower()
        try:
            if cmd in CLICK_KINDS:
                xyz = _xyz(rest)
                session.add_click(xyz, cmd)
                print(_update_line(session, f"{cmd} {' '.join(map(str, xyz))}"), flush=True)
            elif cmd == "stroke" and rest and rest[0].lower() in CLICK_KINDS:
                kind = rest[0].lower()
                voxels = _stroke_zyx(rest[1:])
                session.add_stroke(voxels, kind)
                print(_update_line(session, f"stroke {kind} ({len(voxels)} voxels)"), flush=True)
            elif cmd in ("undo", "reset") and not rest:
                getattr(session, cmd)()
                print(_update_line(session, cmd), flush=True)
            elif cmd == "save" and len(rest) == 1:
                t0 = time.perf_counter()
                out = write_image(session.mask, session.geometry, rest[0], inputs=(args.ct, args.pet))
                challenge, ours = save_interactions(session.interactions, out, inputs=(args.ct, args.pet))
                print(f"wrote {out}, {challenge.name}, {ours.name} ({time.perf_counter() - t0:.2f} s)", flush=True)
            elif cmd == "stats" and not rest:
                sys.stdout.write(session.lesions.to_csv())
                print(_summary(session), flush=True)
            elif cmd in ("quit", "exit") and not rest:
                break
            else:
                raise ConfigError(f"cannot read {cut_message(repr(line), 200)}; {HELP}")
        except (QuantIFError, OSError) as e:
            print(f"error: {cut_message(e)}", file=sys.stderr, flush=True)
    return 0
