"""``quantif report``: a readable, self-contained HTML report of a case or of a ``quantif response`` run."""

from __future__ import annotations

import argparse

from ..errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="readable HTML report of a case (MIPs with numbered lesions, lesion table, liver reference, model, "
             "clicks) or of a response run (both MIPs, matched lesions numbered alike, the category)",
        description="Write one self-contained HTML page (inline style, images as data URIs, no script, nothing "
                    "fetched from elsewhere). 'quantif report CASE_DIR --out report.html': CASE_DIR is a case "
                    "folder as 'quantif response' reads it (ct, pet in SUVbw and mask images, optional liver and "
                    "case.json with tracer, sex, height_m, weight_kg, case and model); clicks.json or one "
                    "*_clicks.json, a saved *_lesions.csv and provenance.json are shown when present. The page "
                    "holds the coronal and sagittal PET MIPs with the lesions outlined and numbered, the lesion "
                    "table (the values of 'quantif stats', SUL columns when sex, height and weight are known), the "
                    "PERCIST liver reference with its quality flag, the model and its provenance, and the clicks. "
                    "'quantif report --response DIR --out report.html': DIR is the output folder of 'quantif "
                    "response'; the page holds the baseline and follow-up MIPs side by side, every lesion-table "
                    "row numbered once on both (new and disappeared lesions marked), and the category with the "
                    "numbers that decided it. For a PDF, print the page from a browser (or 'chromium --headless "
                    "--print-to-pdf=report.pdf report.html'). Written atomically.",
    )
    p.add_argument("case_dir", nargs="?", metavar="CASE_DIR", help="case folder (ct, pet, mask[, liver, case.json])")
    p.add_argument("--out", required=True, metavar="HTML", help="the report file (.html)")
    p.add_argument("--response", metavar="DIR", default=None,
                   help="a 'quantif response' output folder (response.json, lesions.csv): a response report "
                        "instead of a case report")
    p.add_argument("--baseline", metavar="DIR", default=None,
                   help="with --response: the baseline case folder (default: the one response.json names)")
    p.add_argument("--followup", metavar="DIR", default=None,
                   help="with --response: the follow-up case folder (default: the one response.json names)")
    p.add_argument("--model", metavar="DIR", default=None,
                   help="case report: the model that made the mask (model folder, model set or imported "
                        "release), described with its provenance (default: case.json's 'model')")
    p.add_argument("--title", default=None, help="page title (default: 'Case report: <case>' / 'Response report')")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..report import (
        build_case_report,
        build_response_report,
        check_report_path,
        folder_files,
        render_case_html,
        render_response_html,
        write_report,
    )

    if (args.case_dir is None) == (args.response is None):
        raise ConfigError("give a case folder (quantif report CASE_DIR --out report.html) or --response DIR, "
                          "not both")
    if args.response is None and (args.baseline or args.followup):
        raise ConfigError("--baseline and --followup go with --response")
    if args.response is not None and args.model:
        raise ConfigError("--model goes with a case report (CASE_DIR), not with --response")
    if args.response is None:
        inputs = folder_files(args.case_dir)
        check_report_path(args.out, inputs)
        report = build_case_report(args.case_dir, model=args.model)
        text = render_case_html(report, title=args.title)
        summary = f"{report.name}: {report.stats.n_lesions} lesion(s)"
    else:
        inputs = folder_files(*(d for d in (args.response, args.baseline, args.followup) if d))
        check_report_path(args.out, inputs)
        report = build_response_report(args.response, baseline=args.baseline, followup=args.followup)
        inputs += folder_files(report.baseline.folder, report.followup.folder)
        text = render_response_html(report, title=args.title)
        summary = f"{str(report.data.get('criteria', '')).upper()} {report.data.get('category', '?')}"
    out = write_report(text, args.out, inputs)
    print(f"{summary} -> {out}")
    return 0
