#!/usr/bin/env python
"""Accuracy of the tracer discriminator on synthetic phantoms.

1. Writes a training set of phantoms in the autoPET layout with
   ``nnunet_quantif.phantoms.write_dataset`` (default 20 FDG + 20 PSMA, size
   small, dataset seed 0 -> phantom seeds 0..19 per tracer), or uses ``--data``.
2. Trains the MIP-CNN with ``train_tracer`` (the code behind ``quantif tracer
   train``): k-fold CV (default 5), prints per-fold and CV accuracy.
3. Generates unseen phantoms (default 10 FDG + 10 PSMA at size medium, another
   grid than training, phantom seeds 10000+i, never used for training) and
   classifies them with ``predict_tracer`` and the fold ensemble; prints the
   held-out accuracy and any misclassified case.

Usage::

    python scripts/eval_tracer.py [--out DIR] [--epochs 30] [--folds 5] [--seed 0]
                                  [--n-train 20] [--n-test 10] [--train-size small] [--test-size medium]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from nnunet_quantif.phantoms import generate_case, write_dataset
from nnunet_quantif.tracer import load_tracer_ensemble, predict_tracer, train_tracer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="work folder (default: a temporary folder, removed at the end)")
    ap.add_argument("--data", help="use this training dataset instead of writing phantoms")
    ap.add_argument("--n-train", type=int, default=20, help="training phantoms per tracer (default 20)")
    ap.add_argument("--n-test", type=int, default=10, help="unseen phantoms per tracer (default 10)")
    ap.add_argument("--train-size", default="small")
    ap.add_argument("--test-size", default="medium")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.out) if args.out else Path(tmp)
        t0 = time.perf_counter()
        if args.data:
            data = Path(args.data)
        else:
            data = work / "phantoms_train"
            write_dataset(data, args.n_train, args.n_train, size=args.train_size, seed=args.seed, progress=True)
        t_data = time.perf_counter() - t0
        print(f"training data: {data} ({time.perf_counter() - t0:.1f} s)")

        t0 = time.perf_counter()
        res = train_tracer(data, work / "tracer_weights", folds=args.folds, epochs=args.epochs, seed=args.seed,
                           threads=args.threads, progress=True,
                           on_fold=lambda k, a: print(f"fold {k}: accuracy {a:.3f}", flush=True))
        t_train = time.perf_counter() - t0
        print(f"CV accuracy: {res.cv_accuracy:.3f} ({len(res.cases)} cases, {args.folds} folds, {args.epochs} epochs; "
              f"mean fold accuracy {sum(res.fold_accuracy) / len(res.fold_accuracy):.3f}; {t_train:.1f} s)")
        wrong_cv = [(c, p) for c, p in zip(res.cases, res.oof_probability)
                    if (p >= 0.5) != c.lower().startswith("psma")]
        for c, p in wrong_cv:
            print(f"  CV misclassified: {c} P(PSMA)={p:.3f}")

        ens = load_tracer_ensemble(res.out_dir)
        t0 = time.perf_counter()
        correct, n, t_pred = 0, 0, 0.0
        for tracer in ("fdg", "psma"):
            for i in range(args.n_test):
                case = generate_case(tracer, args.test_size, seed=10_000 + i)
                t1 = time.perf_counter()
                pred = predict_tracer(case.pet, case.geometry, ens)
                t_pred += time.perf_counter() - t1
                n += 1
                correct += pred.tracer == tracer
                if pred.tracer != tracer:
                    print(f"  unseen misclassified: {tracer} seed {10_000 + i} -> {pred.tracer} "
                          f"p={pred.probability:.3f} votes={pred.votes}")
        print(f"unseen accuracy: {correct / n:.3f} ({correct}/{n} {args.test_size} phantoms; "
              f"{time.perf_counter() - t0:.1f} s incl. generation, mean predict_tracer {t_pred / n * 1000:.0f} ms)")
        print(f"goals (>= 0.95): CV {'met' if res.cv_accuracy >= 0.95 else 'NOT met'}, "
              f"unseen {'met' if correct / n >= 0.95 else 'NOT met'}; data {t_data:.0f} s, training {t_train:.0f} s")


if __name__ == "__main__":
    main()
