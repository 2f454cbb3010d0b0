"""The runbook's generate_metrics_report.sh: build time, test pass rate and cache hit rate.

Three CSV files under the config's `metrics.dir` (the columns are in the README):

- build_metrics.csv  build_id,started_at,duration_seconds,status — one row per build, in the
  order the builds ran (CI appends); "the last N builds" are its last N rows;
- test_metrics.csv   build_id,passed,failed,skipped — the test run of a build;
- cache_hits.csv     build_id,hits,misses — the build cache's hits and misses in a build.

Other columns are ignored, blank lines skipped. A missing file, a missing column or a value
that does not parse is a `MetricsError` naming the file and the line. The files are read as a
stream (only the last N builds are kept), so a history of years costs no memory; call
`read_metrics` off the event loop (asyncio.to_thread), it does file I/O.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from bot.config import Threshold
from bot.runbook.levels import Level, level_of

T = TypeVar("T")

BUILD_FILE = "build_metrics.csv"
TEST_FILE = "test_metrics.csv"
CACHE_FILE = "cache_hits.csv"
BUILD_COLUMNS = ("build_id", "started_at", "duration_seconds", "status")
TEST_COLUMNS = ("build_id", "passed", "failed", "skipped")
CACHE_COLUMNS = ("build_id", "hits", "misses")
BUILD_STATUSES = ("success", "failure", "cancelled")
DEFAULT_BUILDS = 10
MAX_BUILDS = 1000


class MetricsError(Exception):
    """A metrics file is missing or malformed; str(err) names the file and the line."""

    def __init__(self, path: Path, problem: str, line: int | None = None) -> None:
        where = f"{path} line {line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")
        self.path = path
        self.line = line
        self.problem = problem


@dataclass(frozen=True)
class Build:
    build_id: str
    started_at: datetime
    minutes: float
    status: str
    level: Level


@dataclass(frozen=True)
class BuildTime:
    """The runbook's build time figures over the builds, in minutes, each classed."""

    mean: float
    p95: float
    maximum: float
    mean_level: Level
    p95_level: Level
    max_level: Level


@dataclass(frozen=True)
class Rate:
    """A share (0-1) of `good` in `total`, over `builds` of the report's builds."""

    good: int
    total: int
    builds: int

    @property
    def share(self) -> float | None:
        return self.good / self.total if self.total else None


@dataclass(frozen=True)
class MetricsReport:
    requested: int
    builds: tuple[Build, ...]
    build_time: BuildTime
    failed_builds: int
    tests: Rate  # passed of passed + failed (skipped tests neither pass nor fail)
    cache: Rate  # hits of hits + misses
    threshold: Threshold


def percentile(values: Sequence[float], share: float) -> float:
    """Linear interpolation between closest ranks (numpy's default, Excel's PERCENTILE.INC)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    rank = share * (len(ordered) - 1)
    below = math.floor(rank)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (rank - below)


def read_metrics(directory: Path, builds: int, threshold: Threshold) -> MetricsReport:
    """The report over the last `builds` builds of the files in `directory` (blocking I/O)."""
    window = _last_builds(directory / BUILD_FILE, builds, threshold)
    ids = {build.build_id for build in window}
    tests = _rows_for(directory / TEST_FILE, TEST_COLUMNS, ids, _test_counts)
    caches = _rows_for(directory / CACHE_FILE, CACHE_COLUMNS, ids, _cache_counts)
    minutes = [build.minutes for build in window]
    mean, p95, maximum = statistics.fmean(minutes), percentile(minutes, 0.95), max(minutes)
    return MetricsReport(
        requested=builds,
        builds=tuple(window),
        build_time=BuildTime(
            mean=mean,
            p95=p95,
            maximum=maximum,
            mean_level=level_of(mean, threshold),
            p95_level=level_of(p95, threshold),
            max_level=level_of(maximum, threshold),
        ),
        failed_builds=sum(1 for build in window if build.status == "failure"),
        tests=Rate(
            good=sum(passed for passed, _ in tests.values()),
            total=sum(passed + failed for passed, failed in tests.values()),
            builds=len(tests),
        ),
        cache=Rate(
            good=sum(hits for hits, _ in caches.values()),
            total=sum(hits + misses for hits, misses in caches.values()),
            builds=len(caches),
        ),
        threshold=threshold,
    )


def builds_since(
    directory: Path, last_seen: str | None, threshold: Threshold, limit: int = MAX_BUILDS
) -> list[Build]:
    """The builds after `last_seen` in build_metrics.csv, oldest first (blocking I/O).

    With no `last_seen`, or one no longer in the file (it was rotated), only the newest build:
    a history is not news. At most `limit` builds, the newest ones. Raises MetricsError.
    """
    path = directory / BUILD_FILE
    after: deque[_Row] = deque(maxlen=limit)
    newest: _Row | None = None
    seen = last_seen is None
    for row in _rows(path, BUILD_COLUMNS):
        newest = row
        if seen:
            after.append(row)
        elif row.text("build_id") == last_seen:
            seen = True
    if newest is None:
        return []
    if last_seen is None or not seen:
        rows: list[_Row] = [newest]
    else:
        rows = list(after)
    return [_build(row, threshold) for row in rows]


# --- reading the files -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Row:
    path: Path
    line: int
    values: dict[str, str]

    def text(self, column: str) -> str:
        value = self.values[column].strip()
        if not value:
            raise MetricsError(self.path, f"{column} is empty", self.line)
        return value

    def number(self, column: str) -> float:
        text = self.text(column)
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise MetricsError(
                self.path, f"{column} {text[:40]!r} is not a number of 0 or more", self.line
            )
        return value

    def count(self, column: str) -> int:
        text = self.text(column)
        if not text.isdigit() or not text.isascii():
            raise MetricsError(
                self.path, f"{column} {text[:40]!r} is not a whole number of 0 or more", self.line
            )
        return int(text)

    def time(self, column: str) -> datetime:
        text = self.text(column)
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            raise MetricsError(
                self.path,
                f"{column} {text[:40]!r} is not a date and time (like 2025-10-17T09:30:00Z)",
                self.line,
            ) from None


def _rows(path: Path, columns: Sequence[str]) -> Iterator[_Row]:
    """The data rows of a CSV file with at least `columns`, each with its line number."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, strict=True)
            header = next(reader, None)
            if header is None:
                raise MetricsError(
                    path, f"the file is empty (expected the header {','.join(columns)})"
                )
            names = [name.strip() for name in header]
            missing = [c for c in columns if c not in names]
            if missing:
                raise MetricsError(
                    path,
                    f"the header lacks {', '.join(missing)} (expected {','.join(columns)})",
                    reader.line_num,
                )
            for values in reader:
                if not any(v.strip() for v in values):
                    continue  # a blank line
                if len(values) != len(names):
                    raise MetricsError(
                        path,
                        f"{len(values)} values, but the header names {len(names)} columns",
                        reader.line_num,
                    )
                yield _Row(path, reader.line_num, dict(zip(names, values, strict=True)))
    except FileNotFoundError:
        raise MetricsError(path, "file not found (check metrics.dir in the config)") from None
    except IsADirectoryError:
        raise MetricsError(path, "is a directory, not a CSV file") from None
    except UnicodeDecodeError:
        raise MetricsError(path, "is not UTF-8 text") from None
    except csv.Error as exc:
        raise MetricsError(path, f"not valid CSV ({exc})") from None
    except OSError as exc:
        raise MetricsError(path, f"cannot read the file: {exc.strerror}") from None


def _last_builds(path: Path, count: int, threshold: Threshold) -> list[Build]:
    window: deque[_Row] = deque(maxlen=count)
    for row in _rows(path, BUILD_COLUMNS):
        window.append(row)
    if not window:
        raise MetricsError(path, "has no builds yet (only a header)")
    builds: list[Build] = []
    seen: dict[str, int] = {}
    for row in window:
        build_id = row.text("build_id")
        if build_id in seen:
            raise MetricsError(
                path, f"build {build_id[:40]!r} is already on line {seen[build_id]}", row.line
            )
        seen[build_id] = row.line
        builds.append(_build(row, threshold))
    return builds


def _build(row: _Row, threshold: Threshold) -> Build:
    status = row.text("status").lower()
    if status not in BUILD_STATUSES:
        raise MetricsError(
            row.path, f"status {status[:40]!r} is not one of {', '.join(BUILD_STATUSES)}", row.line
        )
    minutes = row.number("duration_seconds") / 60
    return Build(
        row.text("build_id"), row.time("started_at"), minutes, status, level_of(minutes, threshold)
    )


def _rows_for(
    path: Path, columns: Sequence[str], ids: set[str], parse: Callable[[_Row], T]
) -> dict[str, T]:
    """Each wanted build's row, parsed; a build with two rows is an error (which one counts?)."""
    found: dict[str, tuple[int, T]] = {}
    for row in _rows(path, columns):
        build_id = row.text("build_id")
        if build_id not in ids:
            continue
        if build_id in found:
            raise MetricsError(
                path, f"build {build_id[:40]!r} is already on line {found[build_id][0]}", row.line
            )
        found[build_id] = (row.line, parse(row))
    return {build_id: value for build_id, (_, value) in found.items()}


def _test_counts(row: _Row) -> tuple[int, int]:
    counts = row.count("passed"), row.count("failed")
    row.count("skipped")  # checked, so a broken line is named, though skips count for neither
    return counts


def _cache_counts(row: _Row) -> tuple[int, int]:
    return row.count("hits"), row.count("misses")
