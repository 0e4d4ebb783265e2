"""napari plugin (npe2): click on fused PET/CT, see the lesion mask and the lesion table update.

The manifest is ``napari.yaml`` in this package (entry point ``napari.manifest``); its one contribution is the
dock widget :class:`~nnunet_quantif.napari.widget.QuantIFWidget`. The widget's logic lives in
:mod:`nnunet_quantif.napari.logic`, which needs neither Qt nor napari. Install with
``pip install -e ".[napari]"``; ``quantif view`` opens napari with the widget.
"""

#: npe2 plugin name (the distribution name) and the widget's display name in the manifest.
PLUGIN_NAME = "nnunet-quantif"
WIDGET_NAME = "QuantIF PET/CT clicks"

__all__ = ["PLUGIN_NAME", "WIDGET_NAME"]
