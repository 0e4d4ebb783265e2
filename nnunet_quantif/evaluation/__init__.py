"""autoPET IV evaluation: per-case metrics, the 11-step interactive protocol, baselines, plots, reports.

- :mod:`.metrics` -- :func:`case_metrics` (DSC, FPV, FNV in ml; 18-connected components), AUC over steps.
- :mod:`.aggregate` -- per-case curves, subset means, mean of subset means, ranking.
- :mod:`.bootstrap` -- 95 % percentile bootstrap intervals over cases (plain, paired, stratified by subset).
- :mod:`.baselines` -- SUV thresholds and click-seeded 41 % SUVmax region growing.
- :mod:`.cases` -- finding cases in an autoPET-style folder (tracer, centre, lazy arrays).
- :mod:`.interactive` -- the resumable runner over cases x methods x click steps.
- :mod:`.static` -- evaluating a folder of static predictions.
- :mod:`.model` -- the trained model (inference pipeline, models loaded once) as an evaluation method;
  a case's steps from one interactive session where that is exact.
- :mod:`.plots`, :mod:`.report` -- PNG figures and ``report.md``.
- :mod:`.detection` -- the autoPET V lesion-detection F1 (DMM) and its two aggregations.
- :mod:`.scribbles` -- the autoPET V scribble simulator (strokes on the largest 2D error, the loop's choice,
  training strokes).
"""

from .aggregate import RANKING_METRICS, case_curves, mean_of_subset_means, rank_methods, subset_means, summarize
from .baselines import RegionGrowingMethod, SUVThresholdMethod, default_baselines, region_growing, suv_threshold
from .bootstrap import bootstrap_ci, paired_bootstrap_ci, stratified_bootstrap_ci
from .cases import EvalCase, case_tracer, discover_cases, read_case_table
from .interactive import InteractiveRunner, evaluate_interactive, parse_steps, path_method
from .metrics import METRICS, auc_over_steps, case_metrics, unmatched_voxels, voxel_volume_ml
from .model import ModelMethod, model_method
from .report import markdown_table, render_report, write_report
from .static import evaluate_folder

__all__ = [
    "METRICS", "RANKING_METRICS", "EvalCase", "InteractiveRunner", "ModelMethod", "model_method",
    "RegionGrowingMethod", "SUVThresholdMethod",
    "auc_over_steps", "bootstrap_ci", "case_curves", "case_metrics", "default_baselines", "discover_cases",
    "evaluate_folder", "evaluate_interactive", "markdown_table", "mean_of_subset_means", "parse_steps", "path_method",
    "case_tracer", "paired_bootstrap_ci", "rank_methods", "read_case_table", "region_growing", "render_report",
    "subset_means", "stratified_bootstrap_ci", "suv_threshold",
    "summarize", "unmatched_voxels", "voxel_volume_ml", "write_report",
]
