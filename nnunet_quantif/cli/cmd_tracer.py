"""``quantif tracer train|predict``: the MIP-CNN tracer discriminator."""

from __future__ import annotations

import argparse
import json

from ..tracer.preprocessing import TRAINABLE_ARCHES
from .argtypes import add_nonfinite_argument, nonfinite_mode, nonneg_int
from .vocabulary import add_option


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tracer", help="train or run the MIP-CNN tracer discriminator (FDG vs PSMA)",
                       description="The MIP-CNN that tells FDG from PSMA scans from a coronal MIP of the PET.")
    tsub = p.add_subparsers(dest="tracer_command", metavar="ACTION")

    t = tsub.add_parser("train", help="k-fold training on PET volumes (*_0001.*) under a folder",
                        description="Train one MIP-CNN per cross-validation fold on the PET volumes (*_0001.nii.gz, "
                                    ".nii, .mha) found under --input (recursively, e.g. imagesTr/). The tracer comes "
                                    "from the case-name prefix (fdg_/psma_) or --tracer-csv. Writes fold_<k>.pt and "
                                    "tracer_meta.json to --out and prints the per-fold accuracy.")
    add_option(t, "-i", "--input", aliases=["--data"], dest="data", required=True, metavar="DIR",
               help="folder searched recursively for *_0001 PET files")
    t.add_argument("--out", required=True, metavar="DIR", help="output folder for the weights and metadata")
    add_option(t, "--num-folds", aliases=["--folds"], dest="folds", type=int, default=5,
               help="number of cross-validation folds (default 5)")
    t.add_argument("--epochs", type=int, default=30, help="training epochs per fold (default 30)")
    t.add_argument("--seed", type=nonneg_int, default=0, help="random seed (default 0)")
    t.add_argument("--tracer-csv", metavar="CSV",
                   help="CSV with a header holding 'case' (or name/file) and 'tracer' (fdg/psma) columns")
    t.add_argument("--batch-size", type=int, default=8, help="batch size (default 8)")
    t.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    t.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads while training; results are reproducible for a fixed value (default 1)")
    t.add_argument("--cache", metavar="DIR", help="cache the MIPs in DIR between runs")
    t.add_argument("--arch", choices=TRAINABLE_ARCHES, default="quantif",
                   help="quantif (default): the project's MIP-CNN (BatchNorm, pooling, clip(SUV, 0, 20)/20 input, "
                        "trilinear); authors: the authors' network and input (no BatchNorm, FC 256-128-64-16-4-1, "
                        "raw SUV, B-spline, their 224 window, ties to FDG); stored with the weights "
                        "(docs/METHOD.md)")
    t.set_defaults(func=run_train)

    q = tsub.add_parser("predict", help="predict the tracer of one PET volume",
                        description="Print the tracer (majority vote of the folds; a tie goes to the mean "
                                    "probability, or to FDG for --arch authors weights), the mean P(PSMA) and each "
                                    "fold's vote. The architecture and its input come from the weights folder.")
    q.add_argument("--pet", required=True, metavar="PET", help="PET volume in SUV (.nii.gz, .nii, .mha)")
    add_option(q, "--tracer-weights", aliases=["--weights"], dest="weights", required=True, metavar="DIR",
               help="folder written by `quantif tracer train`")
    q.add_argument("--json", action="store_true", help="print the prediction as one JSON object")
    add_nonfinite_argument(q)
    q.set_defaults(func=run_predict)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_train(args: argparse.Namespace) -> int:
    from ..io import check_output_path
    from ..tracer import train_tracer

    check_output_path(args.out, folder=True)

    def on_fold(k: int, acc: float) -> None:
        print(f"fold {k}: accuracy {acc:.3f}", flush=True)

    result = train_tracer(args.data, args.out, folds=args.folds, epochs=args.epochs, seed=args.seed,
                          tracer_csv=args.tracer_csv, batch_size=args.batch_size, lr=args.lr, threads=args.threads,
                          cache_dir=args.cache, progress=True, on_fold=on_fold, arch=args.arch)
    print(f"mean fold accuracy: {sum(result.fold_accuracy) / len(result.fold_accuracy):.3f}")
    print(f"cross-validation accuracy: {result.cv_accuracy:.3f} ({len(result.cases)} cases)")
    print(f"weights: {result.out_dir}")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from ..io import read_pet
    from ..tracer import load_tracer_ensemble, predict_tracer

    ensemble = load_tracer_ensemble(args.weights)
    pet, geometry = read_pet(args.pet, nonfinite_mode(args))
    pred = predict_tracer(pet, geometry, ensemble, source=args.pet)
    if args.json:
        print(json.dumps(pred.to_dict()))
        return 0
    n_psma = pred.votes.count("psma")
    print(f"tracer: {pred.tracer}")
    print(f"architecture: {ensemble.arch}")
    print(f"probability (mean P(PSMA)): {pred.probability:.4f}")
    print(f"votes: {' '.join(pred.votes)} ({n_psma}/{len(pred.votes)} psma)")
    print("fold probabilities: " + " ".join(f"{p:.4f}" for p in pred.probabilities))
    return 0
