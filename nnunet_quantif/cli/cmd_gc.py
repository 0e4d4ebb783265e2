"""``quantif gc``: one run with the autoPET IV or autoPET V (grand-challenge) container interface."""

from __future__ import annotations

import argparse

from ..inference.pipeline import GC_PROTOCOLS
from .cmd_predict import add_model_arguments, build_pipeline


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "gc",
        help="grand-challenge mode: /input/images/{ct,pet}/<uuid>.mha + /input/lesion-clicks.json -> "
             "/output/images/tumor-lesion-segmentation/<uuid>.mha",
        description="Run one case with the autoPET IV container interface (--protocol autopet-iv, the default): "
                    "the CT and PET uuids may differ; the output takes the PET's uuid. A missing or empty "
                    "lesion-clicks.json means no clicks (step 0). With --protocol autopet-v, lesion-clicks.json holds "
                    "the strokes of every round so far as flat tumor/background points (the autoPET V JSON); the "
                    "output takes the CT's uuid, and nothing is kept between calls (each call predicts from the "
                    "cumulative file alone).",
    )
    p.add_argument("--input", default="/input", metavar="DIR", help="input root (default: /input)")
    p.add_argument("--output", default="/output", metavar="DIR", help="output root (default: /output)")
    p.add_argument("--protocol", choices=GC_PROTOCOLS, default=GC_PROTOCOLS[0],
                   help="autopet-iv: clicks (default); autopet-v: the cumulative strokes of the autoPET V loop")
    add_model_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..inference.pipeline import grand_challenge
    from ..io import check_output_path

    check_output_path(args.output, folder=True)  # before the model loads
    pipeline = build_pipeline(args, progress=False)
    result = grand_challenge(args.input, args.output, pipeline=pipeline, tracer=args.tracer,
                              protocol=args.protocol)
    print(result.summary_line())
    print(f"wrote {result.output}")
    return 0
