"""nnU-Net's dataset fingerprint with fewer foreground intensity samples, for small CPU runs (the demo).

nnU-Net's :class:`DatasetFingerprintExtractor` draws 10^8 foreground voxels in all (with replacement, spread
evenly over the cases) per channel, then takes their percentiles, mean and standard deviation: the CT
channel's ``CTNormalization`` clips at the 0.5th and 99.5th percentiles and scales by the mean and standard
deviation. On the demo's 16 phantoms per tracer those 10^8 draws take most of the fingerprint's time: about 19 s
per dataset inside ``nnUNetv2_plan_and_preprocess`` on 2 cores; measured serially in one process, reading, cropping
and drawing the 16 cases took 5.4 s, concatenating the draws 8.0 s and their statistics 3.7 s (docs/DEMO.md, "The
fingerprint's foreground samples"), although a phantom has far fewer foreground voxels than its 6.25 * 10^6 draws.
:class:`SampledFingerprintExtractor` is nnU-Net's extractor with another total (:data:`DEMO_FOREGROUND_SAMPLES` by
default); everything else, the seeded draws included, is nnU-Net's.

``nnUNetv2_plan_and_preprocess`` without ``--clean`` keeps a ``dataset_fingerprint.json`` that is already in
``nnUNet_preprocessed/<Dataset>/``, so writing it first with :func:`extract_fingerprints` makes nnU-Net plan and
preprocess from it. nnU-Net's extractor starts its workers with ``spawn``, which re-imports the main module: the
demo calls :func:`extract_fingerprints` in a subprocess of its own, as it runs nnU-Net's commands.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor

#: Foreground voxels drawn per channel over the whole dataset (nnU-Net's default is 10^8).
DEMO_FOREGROUND_SAMPLES = 10**6


class SampledFingerprintExtractor(DatasetFingerprintExtractor):
    """nnU-Net's fingerprint extractor drawing ``foreground_samples`` foreground voxels per channel in all."""

    def __init__(self, dataset_name_or_id: str | int, num_processes: int = 8, verbose: bool = False,
                 foreground_samples: int = DEMO_FOREGROUND_SAMPLES):
        super().__init__(dataset_name_or_id, num_processes, verbose)
        self.num_foreground_voxels_for_intensitystats = int(foreground_samples)
        self.show_progress_bar = False


def extract_fingerprints(dataset_ids: Sequence[int | str], num_processes: int = 2,
                         foreground_samples: int = DEMO_FOREGROUND_SAMPLES) -> list[Path]:
    """Write ``nnUNet_preprocessed/<Dataset>/dataset_fingerprint.json`` of each dataset, replacing one there.

    Parameters
    ----------
    dataset_ids : sequence of int or str
        nnU-Net dataset ids or names (``nnUNet_raw`` and ``nnUNet_preprocessed`` must be set).
    num_processes : int
        nnU-Net's worker processes.
    foreground_samples : int
        Foreground voxels drawn per channel over the whole dataset.

    Returns
    -------
    list of Path
        The fingerprint files, in the order of ``dataset_ids``.
    """
    from nnunetv2.paths import nnUNet_preprocessed

    paths = []
    for dataset in dataset_ids:
        extractor = SampledFingerprintExtractor(dataset, num_processes, foreground_samples=foreground_samples)
        extractor.run(overwrite_existing=True)
        paths.append(Path(nnUNet_preprocessed) / extractor.dataset_name / "dataset_fingerprint.json")
    return paths

