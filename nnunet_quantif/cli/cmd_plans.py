"""``quantif plans``: write the QuantIF nnU-Net plans (ResEnc-L 192^3 MultiTalent, or tiny) for a dataset."""

from __future__ import annotations

import argparse

from ..training.plans import DEFAULT_INTENSITY, INTENSITY_SOURCES, PRESETS, load_preset, plans_summary, write_plans


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plans",
        help="write QuantIF plans (ResEnc-L 192^3 MultiTalent architecture, or tiny) for a preprocessed dataset",
        description="Build new nnU-Net plans on top of a planner's output in nnUNet_preprocessed/<Dataset>/. "
                    "resencl192 -> nnUNetResEncUNetLPlans_MT192 (run `nnUNetv2_plan_experiment -d N -pl "
                    "nnUNetPlannerResEncL` first); tiny -> nnUNetPlans_tiny (tests and demo). The new plans "
                    "share the source plans' preprocessed data folder unless --data-identifier is given.",
    )
    p.add_argument("-d", "--dataset", required=True, metavar="ID",
                   help="dataset id or name under $nnUNet_preprocessed, or the preprocessed dataset folder")
    p.add_argument("--preset", required=True, choices=sorted(PRESETS), help="which plans to write")
    p.add_argument("--source-plans", metavar="PLANS",
                   help="plans identifier to build on (default: resencl192 -> nnUNetResEncUNetLPlans, else "
                        "nnUNetPlans; tiny -> nnUNetPlans)")
    p.add_argument("--data-identifier", metavar="NAME",
                   help="own preprocessed-data folder name (then run nnUNetv2_preprocess -plans_name <plans>)")
    p.add_argument("--intensity-properties", choices=INTENSITY_SOURCES, default=None,
                   help="CT/PET intensity properties: 'multitalent' = those the MultiTalent stem was trained with "
                        "(CTNormalization, values of the authors' plans; then the data is preprocessed again "
                        "into its own folder), 'dataset' = the dataset's fingerprint (default: "
                        + ", ".join(f"{k} for {p}" for p, k in sorted(DEFAULT_INTENSITY.items())) + ")")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    out = write_plans(args.dataset, args.preset, args.source_plans, args.data_identifier,
                      args.intensity_properties)
    spec = load_preset(args.preset)
    print(f"wrote {out}")
    print(plans_summary(out))
    plans = json.loads(out.read_text())
    source = plans.get("quantif_intensity_source")
    print("intensity properties: " + (f"MultiTalent's, from {source}" if source else "the dataset's fingerprint"))
    shared = plans["configurations"][spec["configuration"]]["data_identifier"] != f"{spec['plans_name']}_" \
        f"{spec['configuration']}"
    if args.data_identifier or not shared:
        print(f"next: nnUNetv2_preprocess -d {args.dataset} -plans_name {spec['plans_name']} "
              f"-c {spec['configuration']}")
    print(f"train: nnUNetv2_train {args.dataset} {spec['configuration']} FOLD -tr nnUNetTrainerQuantIF_FDG "
          f"-p {spec['plans_name']}")
    return 0
