"""``quantif view``: napari with the QuantIF dock widget (click on fused PET/CT, see the mask and lesion table).

Needs the ``napari`` extra (``pip install -e ".[napari]"``). The model options are those of ``quantif predict``;
they fill the widget's fields, which can still be changed in the viewer.
"""

from __future__ import annotations

import argparse

from ..errors import ConfigError
from .cmd_predict import add_model_arguments
from .prediction_options import pipeline_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "view",
        help="open napari with the QuantIF widget: click on PET/CT, see the mask and the lesion table update",
        description="Open napari with the QuantIF dock widget (the napari plugin of this package; needs "
                    "pip install 'nnunet-quantif[napari]'). With --ct/--pet the case is loaded at once (models "
                    "loaded and step 0 predicted in the background). Click on the 'tumor clicks' or "
                    "'background clicks' layer to add clicks; 'Save' writes the mask, the click JSON and the "
                    "lesion CSV.",
    )
    p.add_argument("--ct", metavar="CT", help="CT image (HU) on the PET grid, or a DICOM CT series folder")
    p.add_argument("--pet", metavar="PET", help="PET image (SUV), or a DICOM PET series folder")
    p.add_argument("--clicks", metavar="JSON", help="click file to resume from (needs --ct/--pet)")
    from .dicom_options import add_ct_mismatch_argument

    add_ct_mismatch_argument(p)
    add_model_arguments(p)
    p.set_defaults(func=run)


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse half a case before napari starts."""
    if bool(args.ct) != bool(args.pet):
        raise ConfigError("give both --ct and --pet, or neither")
    if args.clicks and not args.ct:
        raise ConfigError("--clicks needs --ct and --pet")


def attach(viewer, args: argparse.Namespace):
    """Add the QuantIF widget to ``viewer`` through napari's plugin manager, fill it from ``args`` and, with
    --ct/--pet, start loading the case.

    Returns
    -------
    QuantIFWidget
    """
    from ..napari import PLUGIN_NAME, WIDGET_NAME
    from ..napari.logic import ModelSettings

    check_arguments(args)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN_NAME, WIDGET_NAME)
    options = pipeline_options(args)
    widget.base_options = options
    widget.ignore_ct_mismatch = args.ignore_ct_mismatch
    widget.set_model_settings(ModelSettings.from_options(options, tracer=args.tracer))
    if args.ct:
        widget.load_case(args.ct, args.pet, clicks=args.clicks)
    return widget


def run(args: argparse.Namespace) -> int:
    check_arguments(args)
    try:
        import napari
    except ImportError:
        raise ConfigError("quantif view needs napari: pip install 'nnunet-quantif[napari]'") from None
    viewer = napari.Viewer(title="QuantIF")
    attach(viewer, args)
    napari.run()
    return 0
