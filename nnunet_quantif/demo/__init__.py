"""``quantif demo``: the whole QuantIF method, end to end, on built-in synthetic phantoms, on a CPU.

One module a job: :mod:`.settings` (sizes, names, the paths and state of a run), :mod:`.stages` (the stages, each
calling the code a real run uses, and :func:`run_demo`, which runs or resumes them), :mod:`.targets` (the quality
targets) and :mod:`.report` (``summary.json``, ``report.md``, the plot and the printed ``quantif predict`` command).
"""

from __future__ import annotations

from .report import build_demo_summary, predict_command, render_demo_report
from .settings import SMOKE_NOTE, DemoError, DemoRun, DemoSettings
from .stages import STAGES, run_demo
from .targets import quality_targets

__all__ = ["DemoSettings", "DemoError", "DemoRun", "SMOKE_NOTE", "run_demo", "STAGES", "build_demo_summary",
           "render_demo_report", "predict_command", "quality_targets"]
