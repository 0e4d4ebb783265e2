"""``quantif pretrained``: MultiTalent checkpoint -> nnU-Net ``-pretrained_weights`` file."""

from __future__ import annotations

import argparse

from ..layout import CONFIGURATION


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrained", help="convert MultiTalent weights for nnUNetv2_train -pretrained_weights",
                       description="Pretrained-weight tools for the QuantIF trainers.")
    psub = p.add_subparsers(dest="pretrained_command", metavar="ACTION", required=True)
    c = psub.add_parser(
        "convert", help="map a multi-stem MultiTalent checkpoint onto the network of a plans file",
        description="Pick one MultiTalent input stem (default 221 = autoPET II, CT+PET), copy its CT and PET "
                    "weights to input channels 0 and 1 and give the extra channels (the click heatmap) zero "
                    "weights, drop the pretraining heads and the other stems, copy all other weights, and write "
                    "a checkpoint that `nnUNetv2_train ... -pretrained_weights OUT` accepts. Fails if the plans "
                    "do not describe the MultiTalent architecture (use `quantif plans --preset resencl192`).")
    c.add_argument("--checkpoint", required=True, metavar="MT.pth", help="MultiTalent checkpoint")
    c.add_argument("--plans", required=True, metavar="PLANS.json", help="plans the model will be trained with")
    c.add_argument("--configuration", default=CONFIGURATION, metavar="CONF", help="plans configuration "
                   f"(default {CONFIGURATION})")
    c.add_argument("--stem", default="221", metavar="NAME", help="stem to use (default 221, autoPET II)")
    c.add_argument("--out", required=True, metavar="OUT.pth", help="output checkpoint")
    c.add_argument("--dataset-json", metavar="FILE", help="dataset.json for the number of input channels "
                   "(default: the one next to the plans, else 3)")
    c.add_argument("--stem-init", choices=("copy", "random"), default="copy",
                   help="copy the stem (default), or leave it at the network's random initialisation as the "
                        "authors' models had it (their loader skipped the stem)")
    c.add_argument("--heatmap-init", choices=("zero", "random"), default="zero",
                   help="weights of the input channels the stem lacks (default zero)")
    c.add_argument("--any-intensity", action="store_true",
                   help="do not require the plans' CT/PET intensity properties to be MultiTalent's")
    c.add_argument("--trust-checkpoint", action="store_true",
                   help="unpickle the checkpoint fully. RISK: a crafted .pth file runs arbitrary code when unpickled; "
                        "without this flag only tensors, plain containers and NumPy scalars are loaded")
    c.set_defaults(func=run_convert)
    s = psub.add_parser("stems", help="list the input stems of a checkpoint")
    s.add_argument("--checkpoint", required=True, metavar="MT.pth")
    s.add_argument("--trust-checkpoint", action="store_true",
                   help="unpickle the checkpoint fully (RISK: runs any code a crafted file contains)")
    s.set_defaults(func=run_stems)


def run_convert(args: argparse.Namespace) -> int:
    from ..io import check_output_path
    from ..training.pretrained import convert_multitalent

    check_output_path(args.out, inputs=[args.checkpoint, args.plans])

    info = convert_multitalent(args.checkpoint, args.plans, args.out, configuration=args.configuration,
                               stem=args.stem, dataset_json=args.dataset_json, heatmap_init=args.heatmap_init,
                               trust_checkpoint=args.trust_checkpoint, check_intensity=not args.any_intensity,
                               stem_init=args.stem_init)
    stem = f"stem {info['stem']}" if info["stem_init"] == "copy" else \
        f"stem left random ({len(info['stem_random'])} tensors)"
    print(f"wrote {args.out}: {stem}, {info['copied']} tensors copied "
          f"({len(info['expanded'])} with new input channels, init {info['heatmap_init']}), "
          f"{info['dropped']} checkpoint tensors dropped (pretraining heads, other stems)")
    return 0


def run_stems(args: argparse.Namespace) -> int:
    from ..training.pretrained import load_state_dict_any, stems_in

    stems = stems_in(load_state_dict_any(args.checkpoint, args.trust_checkpoint))
    print("\n".join(stems) if stems else "(single stem)")
    return 0
