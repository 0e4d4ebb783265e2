"""``quantif model verify``: SHA-256 manifests of trained-model folders."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("model", help="model-folder tools (verify a SHA-256 manifest)",
                       description="Model folders hold pickled checkpoints that nnU-Net loads with full "
                                   "unpickling, which can run code: use them only from sources you trust.")
    msub = p.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    v = msub.add_parser("verify", help="check (or --write) DIR/SHA256SUMS, the SHA-256 of every file",
                        description="Check that every file of a trained-model folder still has the SHA-256 "
                                    "recorded in DIR/SHA256SUMS (sha256sum format). --write records the "
                                    "folder as it is now; do that once, for a folder you trust.")
    v.add_argument("folder", metavar="DIR", help="trained-model folder (or any folder)")
    v.add_argument("--write", action="store_true", help="write DIR/SHA256SUMS instead of checking it")
    v.set_defaults(func=run_verify)


def run_verify(args: argparse.Namespace) -> int:
    import sys

    from ..inference.manifest import folder_digests, verify_manifest, write_manifest

    if args.write:
        path = write_manifest(args.folder)
        print(f"wrote {path} ({len(folder_digests(args.folder))} files)")
        return 0
    diff = verify_manifest(args.folder)
    if any(diff.values()):
        for kind, names in diff.items():
            for name in names:
                print(f"{kind}: {name}")
        print(f"quantif: error: {args.folder}: does not match its SHA256SUMS ({len(diff['changed'])} changed, "
              f"{len(diff['missing'])} missing, {len(diff['added'])} added)", file=sys.stderr)
        return 1
    print(f"{args.folder}: OK, every file matches SHA256SUMS")
    return 0
