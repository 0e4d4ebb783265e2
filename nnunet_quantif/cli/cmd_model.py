"""``quantif model``: import released models, describe model folders, SHA-256 manifests.

``import RELEASE SRC --out DST`` (:mod:`nnunet_quantif.releases`), ``info DIR``, ``list ROOT`` and ``verify DIR``.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("model", help="model-folder tools (import a released model, info, list, verify)",
                       description="Model folders hold pickled checkpoints. quantif reads each one with "
                                   "torch.load(weights_only=True) and an allow-list (docs/MODELS.md) before "
                                   "nnU-Net, which unpickles fully, opens it; nnUNetv2_predict itself does not.")
    msub = p.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    v = msub.add_parser("verify", help="check (or --write) DIR/SHA256SUMS, the SHA-256 of every file",
                        description="Check that every file of a trained-model folder still has the SHA-256 "
                                    "recorded in DIR/SHA256SUMS (sha256sum format). --write records the "
                                    "folder as it is now; do that once, for a folder you trust.")
    v.add_argument("folder", metavar="DIR", help="trained-model folder (or any folder)")
    v.add_argument("--write", action="store_true", help="write DIR/SHA256SUMS instead of checking it")
    v.set_defaults(func=run_verify)

    from ..releases import IMPORTERS

    im = msub.add_parser("import", help="import a released model (its checkpoints read safely) into model folders",
                         description="Import a team's released autoPET IV model into model folders this project "
                                     "runs (docs/MODELS.md). Checkpoints are read with torch.load(weights_only=True) "
                                     "and an allow-list, so a file that would run code is refused. DST is written "
                                     "in a temporary folder beside it and appears only when complete.")
    im.add_argument("release", choices=list(IMPORTERS), metavar="RELEASE",
                    help=f"which release: {', '.join(IMPORTERS)}")
    im.add_argument("src", metavar="SRC", help="the unpacked release folder")
    im.add_argument("--out", required=True, metavar="DST", help="output folder (must not exist or be empty)")
    im.add_argument("--force", action="store_true", help="replace a non-empty DST once the new one is complete")
    im.set_defaults(func=run_import)

    info = msub.add_parser("info", help="tracer, folds, network, parameters, input contract, defaults, provenance",
                           description="Describe an imported release, a model folder or a tracer folder.")
    info.add_argument("folder", metavar="DIR", help="imported release, model folder or tracer folder")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=run_info)

    lst = msub.add_parser("list", help="describe every imported release and model folder under ROOT",
                          description="Describe every imported release, model folder and tracer folder under ROOT.")
    lst.add_argument("root", metavar="ROOT", help="folder to search")
    lst.add_argument("--json", action="store_true", help="print JSON")
    lst.set_defaults(func=run_list)


def run_import(args: argparse.Namespace) -> int:
    from ..releases import import_release

    prov = import_release(args.release, args.src, args.out, force=args.force)
    for name, entry in prov["models"].items():
        folds = entry.get("folds")
        print(f"{args.out}/{name}: " + (f"folds {', '.join(map(str, folds))}" if isinstance(folds, list)
                                        else f"{entry.get('folds')} tracer folds"))
    print(f"{args.out}/provenance.json: {len(prov['source_sha256'])} source files with SHA-256; "
          f"licence: {prov['licence']}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    import json

    from ..releases.info import format_info, model_info

    info = model_info(args.folder)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


def run_list(args: argparse.Namespace) -> int:
    import json

    from ..releases.info import format_info, list_models

    infos = list_models(args.root)
    if args.json:
        print(json.dumps(infos, indent=2))
    elif not infos:
        print(f"{args.root}: no model folders found")
    else:
        print("\n".join(format_info(i) for i in infos))
    return 0


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
