"""Synthetic whole-body FDG and PSMA PET/CT phantoms in the autoPET layout.

>>> from nnunet_quantif.phantoms import generate_case
>>> case = generate_case("psma", size="small", seed=3)
>>> case.pet.shape == case.ct.shape == case.label.shape   # (z, y, x)
True

Orientation: identity direction; arrays (z, y, x) with +x = patient left, +y = posterior,
+z = superior (z index 0 at the feet). Numbers (SUV per tracer and organ, HU per tissue,
lesion ranges, grids) are documented in ``configs/phantoms.json``.
"""

from .anatomy import ORGAN_IDS, ORGAN_LIST, make_geometry, phantom_config
from .dataset import SIZES, PhantomCase, case_name, generate_case, iter_cases, totalseg_maps, write_dataset
from .uptake import suv_ranges

__all__ = ["ORGAN_IDS", "ORGAN_LIST", "SIZES", "PhantomCase", "case_name", "generate_case", "iter_cases",
           "make_geometry", "phantom_config", "suv_ranges", "totalseg_maps", "write_dataset"]
