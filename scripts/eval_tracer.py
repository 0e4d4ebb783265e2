#!/usr/bin/env python
"""Accuracy of the tracer discriminator architectures on synthetic phantoms.

1. Writes a training set of phantoms in the autoPET layout with
   ``nnunet_quantif.phantoms.write_dataset`` (default 20 FDG + 20 PSMA, size
   small, dataset seed ``--data-seed`` 0), or uses ``--data``.
2. Generates held-out phantoms (default 10 FDG + 10 PSMA at size medium, another
   grid than training, phantom seeds 10000+i, never used for training) and computes
   each architecture's input for them once.
3. For every architecture in ``--arch`` (default both: ``quantif``, the project's
   MIP-CNN, and ``authors``, the authors' network on their raw-SUV input) and every
   training seed in ``--seeds`` (default 0): trains with ``train_tracer`` (the code
   behind ``quantif tracer train --arch``; k-fold CV, default 5 folds, 30 epochs),
   prints the CV accuracy, then classifies the held-out phantoms with the fold
   ensemble (the architecture's own input and vote, as ``predict_tracer`` does) and
   prints the held-out accuracy and any misclassified case.
4. Prints one summary line per architecture (mean over seeds) and, with ``--json``,
   writes every number to a file.

Usage::

    python scripts/eval_tracer.py [--arch quantif authors] [--seeds 0 1 2] [--out DIR] [--json FILE]
                                  [--epochs 30] [--folds 5] [--n-train 20] [--n-test 10]
                                  [--train-size small] [--test-size medium]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from nnunet_quantif.phantoms import generate_case, write_dataset
from nnunet_quantif.tracer import ARCHES, load_tracer_ensemble, mip_from_pet, train_tracer

TEST_SEED0 = 10_000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", nargs="+", choices=ARCHES, default=list(ARCHES), help="architectures (default both)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0], help="training seeds (default 0)")
    ap.add_argument("--out", help="work folder (default: a temporary folder, removed at the end)")
    ap.add_argument("--data", help="use this training dataset instead of writing phantoms")
    ap.add_argument("--data-seed", type=int, default=0, help="seed of the training phantoms (default 0)")
    ap.add_argument("--n-train", type=int, default=20, help="training phantoms per tracer (default 20)")
    ap.add_argument("--n-test", type=int, default=10, help="held-out phantoms per tracer (default 10)")
    ap.add_argument("--train-size", default="small")
    ap.add_argument("--test-size", default="medium")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", metavar="FILE", help="write all results to FILE")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.out) if args.out else Path(tmp)
        t0 = time.perf_counter()
        if args.data:
            data = Path(args.data)
        else:
            data = work / "phantoms_train"
            write_dataset(data, args.n_train, args.n_train, size=args.train_size, seed=args.data_seed, progress=True)
        print(f"training data: {data} ({time.perf_counter() - t0:.1f} s)")

        t0 = time.perf_counter()
        held_out: list[tuple[str, int, dict[str, np.ndarray]]] = []
        for tracer in ("fdg", "psma"):
            for i in range(args.n_test):
                case = generate_case(tracer, args.test_size, seed=TEST_SEED0 + i)
                held_out.append((tracer, TEST_SEED0 + i,
                                 {a: mip_from_pet(case.pet, case.geometry, arch=a) for a in args.arch}))
        last = TEST_SEED0 + args.n_test - 1
        print(f"held-out: {len(held_out)} {args.test_size} phantoms, seeds {TEST_SEED0}..{last} per tracer "
              f"({time.perf_counter() - t0:.1f} s incl. generation and inputs)")

        runs = []
        for arch in args.arch:
            for seed in args.seeds:
                t0 = time.perf_counter()
                res = train_tracer(data, work / f"tracer_{arch}_seed{seed}", folds=args.folds, epochs=args.epochs,
                                   seed=seed, threads=args.threads, cache_dir=work / "mip_cache", arch=arch,
                                   progress=False)
                t_train = time.perf_counter() - t0
                ens = load_tracer_ensemble(res.out_dir)
                wrong = []
                for tracer, case_seed, mips in held_out:
                    pred = ens.predict_mip(mips[arch])
                    if pred.tracer != tracer:
                        wrong.append({"tracer": tracer, "seed": case_seed, "predicted": pred.tracer,
                                      "probability": pred.probability, "votes": pred.votes})
                acc = 1.0 - len(wrong) / len(held_out)
                print(f"[{arch} seed {seed}] CV accuracy {res.cv_accuracy:.3f} ({len(res.cases)} cases, "
                      f"{args.folds} folds, {args.epochs} epochs; {t_train:.0f} s), held-out accuracy {acc:.3f} "
                      f"({len(held_out) - len(wrong)}/{len(held_out)})", flush=True)
                for w in wrong:
                    print(f"  held-out misclassified: {w['tracer']} seed {w['seed']} -> {w['predicted']} "
                          f"p={w['probability']:.3f} votes={w['votes']}")
                runs.append({"arch": arch, "seed": seed, "cv_accuracy": res.cv_accuracy,
                             "fold_accuracy": res.fold_accuracy, "held_out_accuracy": acc,
                             "held_out_misclassified": wrong, "train_seconds": round(t_train, 1)})

        summary = {}
        for arch in args.arch:
            rs = [r for r in runs if r["arch"] == arch]
            summary[arch] = {"cv_accuracy_mean": float(np.mean([r["cv_accuracy"] for r in rs])),
                             "held_out_accuracy_mean": float(np.mean([r["held_out_accuracy"] for r in rs])),
                             "held_out_accuracy_min": float(np.min([r["held_out_accuracy"] for r in rs])),
                             "seeds": [r["seed"] for r in rs]}
            s = summary[arch]
            print(f"{arch}: mean CV accuracy {s['cv_accuracy_mean']:.3f}, held-out accuracy mean "
                  f"{s['held_out_accuracy_mean']:.3f} (min {s['held_out_accuracy_min']:.3f}) over seeds {s['seeds']}")
        if args.json:
            out = {"settings": {k: v for k, v in vars(args).items() if k != "json"},
                   "held_out_seeds": [TEST_SEED0, TEST_SEED0 + args.n_test - 1], "runs": runs, "summary": summary}
            Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
            print(f"results: {args.json}")


if __name__ == "__main__":
    main()
