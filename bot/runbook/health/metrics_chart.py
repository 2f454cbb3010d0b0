"""The metrics report's chart: build durations as bars, with the warning and critical lines.

matplotlib is imported here, inside the function, and only when a chart is drawn: it costs
tens of megabytes and a few hundred milliseconds, and most bots never draw a chart. Drawing
is CPU work, so `draw_build_chart` runs it on a thread of its own, never on the event loop.
The Figure API (not pyplot) keeps no global state, so it is safe off the main thread.
"""

from __future__ import annotations

import asyncio
import io
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from bot.runbook.health.metrics_report import MetricsReport
from bot.runbook.levels import Level

if TYPE_CHECKING:
    from matplotlib.axes import Axes

WIDTH_PX, HEIGHT_PX, DPI = 800, 400, 100
LEVEL_COLORS = {Level.NORMAL: "#2a9d8f", Level.WARNING: "#e9c46a", Level.CRITICAL: "#e63946"}
MAX_TICK_LABELS = 25  # past this, build ids would overlap: label every k-th bar

# One thread: charts are rare, and two at once would only compete for the same cores.
_executor: ThreadPoolExecutor | None = None


async def draw_build_chart(report: MetricsReport) -> bytes:
    """The PNG (800×400) of the report's build durations, drawn off the event loop."""
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chart")
    return await asyncio.get_running_loop().run_in_executor(_executor, build_chart_png, report)


def build_chart_png(report: MetricsReport) -> bytes:
    """Draw the chart (blocking, CPU-bound): one bar per build, coloured by its level."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    figure = Figure(figsize=(WIDTH_PX / DPI, HEIGHT_PX / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    builds = report.builds
    positions = range(len(builds))
    axes.bar(
        positions,
        [build.minutes for build in builds],
        color=[LEVEL_COLORS[build.level] for build in builds],
        edgecolor=["black" if build.status == "failure" else "none" for build in builds],
        linewidth=1.2,
    )
    threshold = report.threshold
    axes.axhline(
        threshold.warning,
        color=LEVEL_COLORS[Level.WARNING],
        linestyle="--",
        label=f"warning {threshold.warning:g} min",
    )
    axes.axhline(
        threshold.critical,
        color=LEVEL_COLORS[Level.CRITICAL],
        linestyle="--",
        label=f"critical {threshold.critical:g} min",
    )
    _label_builds(axes, [build.build_id for build in builds])
    top = max(threshold.critical, report.build_time.maximum)
    axes.set_ylim(0, top * 1.15)
    axes.set_ylabel("build time (minutes)")
    axes.set_title(f"Build durations · last {len(builds)} build{'s' if len(builds) != 1 else ''}")
    handles, _ = axes.get_legend_handles_labels()
    if report.failed_builds:
        handles.append(Patch(facecolor="none", edgecolor="black", label="failed build"))
    axes.legend(handles=handles, loc="upper left", fontsize="small")
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()  # arranges inside the fixed size; the PNG stays 800×400
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=DPI)
    return png.getvalue()


def _label_builds(axes: Axes, ids: list[str]) -> None:
    step = max(1, -(-len(ids) // MAX_TICK_LABELS))
    ticks = list(range(0, len(ids), step))
    # Ids come from a CSV: a '$' pair would be parsed as mathtext (and can fail to draw).
    labels = [ids[i][:16].replace("$", r"\$") for i in ticks]
    axes.set_xticks(ticks, labels, rotation=45, ha="right", fontsize="small")
    axes.set_xlabel("build")
