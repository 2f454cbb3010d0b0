"""The metrics report over the shipped sample CSVs, figures computed by hand; bad files named."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bot.config import Threshold
from bot.runbook.health.metrics_chart import build_chart_png
from bot.runbook.health.metrics_report import MetricsError, percentile, read_metrics
from bot.runbook.levels import Level
from bot.slack.health.metrics_report import figures
from tests.conftest import REPO
from tests.support.health_reports import png_size
from tests.support.slack_fake import block_kit_errors

SAMPLES = REPO / "metrics"
BUILD_MINUTES = Threshold(warning=30, critical=40)

# The last 10 builds of metrics/build_metrics.csv (1033-1042), read off the file by hand.
LAST_10_SECONDS = [1623, 1809, 2214, 1578, 1902, 2508, 1656, 1761, 1830, 1944]
LAST_10_PASSED = [1210, 1212, 1215, 1190, 1218, 1218, 1220, 1221, 1221, 1224]
LAST_10_FAILED = [1, 0, 0, 25, 0, 3, 0, 0, 1, 0]
LAST_10_HITS = [842, 798, 655, 870, 811, 602, 866, 851, 838, 829]
LAST_10_MISSES = [158, 202, 345, 130, 189, 398, 134, 149, 162, 171]


def test_the_sample_files_give_the_figures_computed_by_hand() -> None:
    report = read_metrics(SAMPLES, 10, BUILD_MINUTES)
    assert [b.build_id for b in report.builds] == [str(n) for n in range(1033, 1043)]

    minutes = sorted(s / 60 for s in LAST_10_SECONDS)
    mean = sum(LAST_10_SECONDS) / 10 / 60  # 18825 s / 10 builds = 31.375 min
    # p95 by linear interpolation: rank 0.95 * 9 = 8.55, between the 9th and 10th smallest.
    p95 = minutes[8] + 0.55 * (minutes[9] - minutes[8])  # 36.9 + 0.55 * 4.9 = 39.595
    assert report.build_time.mean == pytest.approx(mean) == pytest.approx(31.375)
    assert report.build_time.p95 == pytest.approx(p95) == pytest.approx(39.595)
    assert report.build_time.maximum == pytest.approx(2508 / 60) == pytest.approx(41.8)
    assert report.build_time.mean_level is Level.WARNING
    assert report.build_time.p95_level is Level.WARNING
    assert report.build_time.max_level is Level.CRITICAL
    assert report.failed_builds == 1  # build 1036

    passed, failed = sum(LAST_10_PASSED), sum(LAST_10_FAILED)
    assert (report.tests.good, report.tests.total) == (passed, passed + failed) == (12149, 12179)
    hits, misses = sum(LAST_10_HITS), sum(LAST_10_MISSES)
    assert (report.cache.good, report.cache.total) == (hits, hits + misses) == (7962, 10000)

    message = figures(report, requested_by="U0ASKER")
    assert block_kit_errors(message.blocks) == []
    assert message.text == (
        "Metrics report, last 10 builds: build time mean 31.4 min (Warning), p95 39.6 min "
        "(Warning), max 41.8 min (Critical); 1 failed; tests 99.8% passed; cache 79.6% hits"
    )


def test_more_builds_than_the_file_holds_reports_what_there_is() -> None:
    report = read_metrics(SAMPLES, 1000, BUILD_MINUTES)
    assert len(report.builds) == 14
    assert report.build_time.mean == pytest.approx(
        (1512 + 1688 + 1395 + 1740 + sum(LAST_10_SECONDS)) / 14 / 60
    )
    assert "(asked for 1000; the file has 14)" in str(figures(report, requested_by="U1").blocks)


def test_percentile_by_hand() -> None:
    assert percentile([5.0], 0.95) == 5.0
    assert percentile([1.0, 2.0], 0.5) == 1.5
    assert percentile([10.0, 0.0, 20.0, 30.0, 40.0], 0.95) == pytest.approx(38.0)  # rank 3.8


def copy_samples(tmp_path: Path) -> Path:
    target = tmp_path / "metrics"
    shutil.copytree(SAMPLES, target)
    return target


def replace_line(path: Path, number: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("file", "line", "text", "problem"),
    [
        (
            "build_metrics.csv",
            15,
            "1042,2025-10-17T08:30:00Z,abc,success",
            "duration_seconds 'abc'",
        ),
        ("build_metrics.csv", 15, "1042,2025-10-17T08:30:00Z,-5,success", "of 0 or more"),
        ("build_metrics.csv", 15, "1042,yesterday,1944,success", "started_at 'yesterday'"),
        ("build_metrics.csv", 15, "1042,2025-10-17T08:30:00Z,1944,green", "status 'green'"),
        ("build_metrics.csv", 15, "1042,2025-10-17T08:30:00Z,1944", "3 values"),
        ("build_metrics.csv", 15, "1041,2025-10-17T08:30:00Z,1944,success", "already on line 14"),
        ("build_metrics.csv", 1, "build,when,seconds,status", "the header lacks"),
        ("test_metrics.csv", 12, "1039,1220,x,14", "failed 'x' is not a whole number"),
        ("test_metrics.csv", 12, "1039,1220,1.5,14", "failed '1.5'"),
        ("cache_hits.csv", 11, "1038,602", "2 values"),
        ("cache_hits.csv", 11, '1038,"602,398', "not valid CSV"),
    ],
)
def test_a_malformed_line_is_named(
    tmp_path: Path, file: str, line: int, text: str, problem: str
) -> None:
    directory = copy_samples(tmp_path)
    replace_line(directory / file, line, text)
    with pytest.raises(MetricsError) as caught:
        read_metrics(directory, 10, BUILD_MINUTES)
    message = str(caught.value)
    assert problem in message
    if "not valid CSV" not in problem:
        assert message.startswith(f"{directory / file} line {line}: "), message


def test_only_the_builds_reported_are_checked(tmp_path: Path) -> None:
    # Line 3 holds build 1030, outside the last 10: its broken test count does not matter.
    directory = copy_samples(tmp_path)
    replace_line(directory / "test_metrics.csv", 3, "1030,x,x,x")
    assert read_metrics(directory, 10, BUILD_MINUTES).tests.total == 12179
    with pytest.raises(MetricsError, match=r"test_metrics.csv line 3: passed 'x'"):
        read_metrics(directory, 13, BUILD_MINUTES)


@pytest.mark.parametrize("file", ["build_metrics.csv", "test_metrics.csv", "cache_hits.csv"])
def test_a_missing_file_is_named(tmp_path: Path, file: str) -> None:
    directory = copy_samples(tmp_path)
    (directory / file).unlink()
    with pytest.raises(MetricsError, match=f"{file}: file not found"):
        read_metrics(directory, 10, BUILD_MINUTES)


def test_an_empty_history_and_builds_without_tests(tmp_path: Path) -> None:
    directory = copy_samples(tmp_path)
    (directory / "build_metrics.csv").write_text("build_id,started_at,duration_seconds,status\n")
    with pytest.raises(MetricsError, match="has no builds yet"):
        read_metrics(directory, 10, BUILD_MINUTES)

    directory = copy_samples(tmp_path / "again")
    (directory / "test_metrics.csv").write_text(
        "skipped,failed,passed,build_id,extra\n3,1,9,1042,x\n"
    )
    report = read_metrics(directory, 10, BUILD_MINUTES)  # columns in any order, extras ignored
    assert (report.tests.good, report.tests.total, report.tests.builds) == (9, 10, 1)
    assert "90.0% (9 of 10 tests passed, 1 of 10 builds)" in str(
        figures(report, requested_by="U1").blocks
    )


def test_the_chart_is_an_800_by_400_png() -> None:
    report = read_metrics(SAMPLES, 10, BUILD_MINUTES)
    assert png_size(build_chart_png(report)) == (800, 400)
    many = read_metrics(SAMPLES, 1000, BUILD_MINUTES)
    assert png_size(build_chart_png(many)) == (800, 400)


def test_build_ids_are_drawn_as_text(tmp_path: Path) -> None:
    # '$\frac$' would be mathtext, and malformed: drawing it would fail.
    directory = copy_samples(tmp_path)
    replace_line(directory / "build_metrics.csv", 15, r"$\frac$,2025-10-17T08:30:00Z,1944,success")
    replace_line(directory / "test_metrics.csv", 15, r"$\frac$,1224,0,15")
    replace_line(directory / "cache_hits.csv", 15, r"$\frac$,829,171")
    report = read_metrics(directory, 10, BUILD_MINUTES)
    assert report.builds[-1].build_id == r"$\frac$"
    assert png_size(build_chart_png(report)) == (800, 400)


def test_rounding_never_claims_a_perfect_rate() -> None:
    report = read_metrics(SAMPLES, 3, BUILD_MINUTES)  # 3,666 of 3,667 tests passed
    assert (report.tests.good, report.tests.total) == (3666, 3667)
    assert "tests >99.9% passed" in figures(report, requested_by="U1").text
