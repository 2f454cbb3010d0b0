"""Ack latency under a burst of /health commands: this bot vs a naive Bolt app, in one run.

Slack gives an app 3 seconds to acknowledge a slash command and does not retry; past that the
user sees an error. The bot acks from its listener and hands the health check to its own
worker pool. The usual Bolt pattern (sync ``App``, ``ack()`` then the work inline) keeps one
of Bolt's 5 listener threads busy per command, so a burst queues acks behind health checks.
Numbers measured on different days or machines are not comparable, so both contenders run
here, in one process tree, against the same Slack Web API fake and the same slow EventMesh
demo service, in interleaved rounds (ours, naive, ours, naive, ...) so background noise hits
both alike.

Ack latency is what Slack would see: from the moment a signed request starts (connection
setup included) to the moment its HTTP response is complete, measured by a client process of
its own (this one also runs the Slack fake, whose threads would delay the client). Each round
fires ``concurrency`` signed ``/health staging`` commands at once, each from its own channel
and user, then waits until the target has finished all of its background work (so a round
never runs on top of the previous round's leftovers) and reports how long that took.

Each command of a burst comes from its own user, as a burst in an incident would (one person
sending 50 would meet the per-user rate, limits.commands: 10 a minute by default, and be
answered "wait" without any work, which is not what is measured).

With ``--under-load``, our bot acks its bursts while it is busy the way an incident makes it:
its config also holds 200 healthy environments and 50 failing ones (healthz 503), all checked
every 5 s with alerts on (so 50 alerts fire and page); each of its rounds starts a real
`/deploy` (benchmarks/loopback_deploy.py: built, packaged with a ``--deploy-mb`` random
payload, uploaded over a loopback OpenSSH sshd, installed and restarted) and, once that
deploy's upload is running on the host, sends a `/health all` over all of them and then the
burst. The round waits for the deploy's result (it must have deployed) and reports whether its
upload was still running when the burst's last ack came back. The naive app, the anchor, gets
its bursts as before.

Run from the repository root::

    .venv/bin/python -m benchmarks.ack_latency --concurrency 50 --rounds 3 --latency-ms 1000
    .venv/bin/python -m benchmarks.ack_latency --under-load --deploy-mb 100

Everything started here (Slack fake, demo service, the bot, the naive app) listens on
127.0.0.1 only and is stopped on the way out, errors and Ctrl-C included.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from benchmarks.loopback_deploy import DEPLOYER, DeployRun, LoopbackDeploy, version_of
from benchmarks.loopback_deploy import ENVIRONMENT as DEPLOY_ENVIRONMENT
from tests.conftest import (
    BOT_TOKEN,
    SIGNING_SECRET,
    clean_env,
    free_port,
    new_channel,
    start_bot,
    stop_process,
    wait_until_serving,
    write_config,
)
from tests.conftest import (
    start_demo as start_demo_service,
)
from tests.support.alerts import CONSOLE_USER, alerts_config
from tests.support.slack_fake import ApiCall, SlackFake
from tests.support.slack_signing import signed_headers, slash_command_body

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIEnvironment

    from slack_bolt import Ack, Say

SLACK_ACK_DEADLINE_S = 3.0
# Well past Slack's 3 s, so a slow ack is measured rather than cut off by the client.
CLIENT_TIMEOUT_S = 15.0
# A round's background work is bounded: N health checks of ~latency each, 5 at a time at worst.
DRAIN_BASE_TIMEOUT_S = 30.0
WARMUP_REQUESTS = 2
NAIVE_HEALTH_TIMEOUT_S = 2.0  # the runbook's critical threshold
ENVIRONMENT = "staging"
EVENTS_PATH = "/slack/events"
OURS, NAIVE = "ours", "naive"
# --under-load: healthy environments for /health all, failing ones for the alert storm.
LOAD_FLEET, LOAD_FAILING, LOAD_INTERVAL = 200, 50, "5s"
DEPLOY_MB = 100  # --under-load: the deploy's random payload, so its upload outlasts a burst
REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------------
# The naive contender: Bolt's README pattern, run as `python -m benchmarks.ack_latency naive-app`
# ---------------------------------------------------------------------------------------------


def serve_naive_app(port: int, api_url: str, health_url: str) -> None:
    """A sync Bolt app that acks, then checks health inline, as Bolt's examples do.

    Served the way a small sync Bolt app usually is: Bolt's WSGI adapter on a thread-per-request
    server. The listen backlog is raised from socketserver's 5 so that dropped SYNs (a TCP
    retransmit costs a whole second) cannot be mistaken for Bolt's listener queueing.
    """
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from slack_bolt import App
    from slack_bolt.adapter.wsgi import SlackRequestHandler
    from slack_sdk import WebClient

    app = App(
        signing_secret=SIGNING_SECRET,
        client=WebClient(token=BOT_TOKEN, base_url=api_url),
    )

    @app.command("/health")
    def health(ack: Ack, command: dict[str, Any], say: Say) -> None:
        ack()
        env = (command.get("text") or "").strip() or ENVIRONMENT
        try:
            response = httpx.get(health_url, timeout=NAIVE_HEALTH_TIMEOUT_S)
        except httpx.HTTPError as exc:
            say(f"{env}: Unhealthy ({type(exc).__name__})")
            return
        verdict = "Healthy" if response.status_code == 200 else "Unhealthy"
        elapsed_ms = response.elapsed.total_seconds() * 1000
        say(f"{env}: {verdict} (healthz {response.status_code} in {elapsed_ms:.0f} ms)")

    slack_handler = SlackRequestHandler(app, path=EVENTS_PATH)

    def wsgi_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/healthz":  # readiness probe for the benchmark
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok"]
        return slack_handler(environ, start_response)

    class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        request_queue_size = 128

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            """No per-request line on stderr: 300 of them would only slow the server down."""

    with make_server(
        "127.0.0.1",
        port,
        wsgi_app,
        server_class=ThreadingWSGIServer,
        handler_class=QuietHandler,
    ) as server:
        server.serve_forever()


def naive_app_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.ack_latency naive-app")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-url", required=True)
    parser.add_argument("--health-url", required=True)
    args = parser.parse_args(argv)
    serve_naive_app(args.port, args.api_url, args.health_url)
    return 0


# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AckSample:
    seconds: float
    status: int  # 0: no HTTP response at all (connection error or client timeout)
    channel: str


@dataclass(frozen=True)
class Round:
    target: str
    number: int
    acks: list[AckSample]
    work_done_s: float  # from the burst's start to the last Slack call of its background work
    reports: int  # the burst's commands whose channel got a message from the bot
    deploy: DeployRun | None = None  # --under-load: the deploy that ran during the burst


@dataclass
class Target:
    """One contender: where to send commands and how to tell its background work is over."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    wait_work_done: Callable[[list[str], float], None]
    health_all_first: bool = False  # --under-load: each round starts with a /health all
    storm: Callable[[], None] | None = None  # --under-load: makes the failing ones fail
    deploy: LoopbackDeploy | None = None  # --under-load: a deploy runs during each burst
    metrics_url: str | None = None  # ours: its commands' outcomes are read from here


def burst(url: str, fake: SlackFake, concurrency: int) -> list[AckSample]:
    """Send ``concurrency`` signed /health commands at once; time each until its response.

    Bodies and signatures are built here, before the clock starts; the requests are sent by a
    process of their own (benchmarks/burst_client.py, plain sockets). In this process the
    Slack fake's threads serve the bot's calls, and under load they held the GIL long enough
    to delay the client's own connects by 200 ms (httpx's trace: TCP connects done 210 ms
    after they were started, on loopback): time no Slack would add to an ack.
    """
    prepared = []
    for _ in range(concurrency):
        channel = new_channel()
        body = slash_command_body(
            "/health",
            ENVIRONMENT,
            user_id=user_of(channel),
            channel_id=channel,
            response_url=fake.response_url(),
        )
        headers = signed_headers(SIGNING_SECRET, body)
        prepared.append({"channel": channel, "body": body.decode(), "headers": headers})
    sent = subprocess.run(
        [sys.executable, "-m", "benchmarks.burst_client", url],
        input=json.dumps(prepared),
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        timeout=CLIENT_TIMEOUT_S * 2,
    )
    if sent.returncode != 0:
        raise RuntimeError(f"burst-client exited with {sent.returncode}: {sent.stderr}")
    return [AckSample(**sample) for sample in json.loads(sent.stdout)]


def user_of(channel: str) -> str:
    """Each command its own person (see the module's docstring: the per-user rate)."""
    return "U" + channel[1:]


def bot_calls(fake: SlackFake, channels: Iterable[str]) -> list[ApiCall]:
    """The chat.postMessage/chat.update calls into ``channels``."""
    wanted = set(channels)
    return [
        call
        for method in ("chat.postMessage", "chat.update")
        for call in fake.calls_to(method)
        if call.args.get("channel") in wanted
    ]


def last_call_at(calls: Sequence[ApiCall]) -> float:
    """``time.monotonic()`` of the last of ``calls``; NaN (shown as "-") when there is none."""
    return max((call.at for call in calls), default=math.nan)


def run_round(
    target: Target, number: int, fake: SlackFake, concurrency: int, timeout: float
) -> Round:
    """One burst, then wait for its background work so the next round starts on a quiet target.

    Under load: a deploy first, the burst once its upload runs, and its result after."""
    deploying = None
    if target.deploy is not None:
        deploying = target.deploy.start(target.url, fake, version_of(number))
        target.deploy.wait_uploading(fake, deploying)
    started = time.monotonic()
    channels = []
    if target.health_all_first:
        channel = new_channel()
        body = slash_command_body(
            "/health",
            "all",
            user_id=user_of(channel),
            channel_id=channel,
            response_url=fake.response_url(),
        )
        sent = httpx.post(
            target.url, content=body, headers=signed_headers(SIGNING_SECRET, body), timeout=15
        )
        print(f"  /health all acked in {sent.elapsed.total_seconds() * 1000:.0f} ms: HTTP "
              f"{sent.status_code}", file=sys.stderr)  # fmt: skip
        if sent.status_code == 200:
            channels.append(channel)  # else Slack would have shown an error: nothing to wait for
    upload_at_start = target.deploy is not None and target.deploy.uploading()
    acks = burst(target.url, fake, concurrency)
    upload_at_end = target.deploy is not None and target.deploy.uploading()
    channels += [ack.channel for ack in acks]
    try:
        target.wait_work_done(channels, timeout)
    except RuntimeError as late:
        # Under load the work may outlast the wait; the acks are what is measured: go on.
        print(f"  {late}; the next round starts anyway", file=sys.stderr)
    deployed = None
    if target.deploy is not None and deploying is not None:
        deployed = target.deploy.finish(
            fake, deploying, version_of(number), upload_at_start, upload_at_end
        )
        print(f"  {deployed.result}; upload running at the burst's start/end: "
              f"{_yes(upload_at_start)}/{_yes(upload_at_end)}; {deployed.upload_line}",
              file=sys.stderr)  # fmt: skip
    calls = bot_calls(fake, channels)
    reported = {call.args.get("channel") for call in calls}
    reports = sum(ack.channel in reported for ack in acks)
    return Round(target.name, number, acks, last_call_at(calls) - started, reports, deployed)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def warm_up(target: Target, fake: SlackFake, timeout: float) -> None:
    """First requests pay for imports, auth.test and connection setup: not what we measure.
    Under load a first deploy installs the service the rounds' deploys replace."""
    for _ in range(WARMUP_REQUESTS):
        acks = burst(target.url, fake, 1)
        if acks[0].status != 200:
            raise RuntimeError(f"{target.name}: warm-up answered {acks[0].status}")
        target.wait_work_done([acks[0].channel], timeout)
    if target.deploy is not None:
        first = version_of(0)
        channel = target.deploy.start(target.url, fake, first)
        target.deploy.finish(fake, channel, first, False, False)


def naive_work_done(fake: SlackFake) -> Callable[[list[str], float], None]:
    """The naive listener posts exactly one message per command when its check is done."""

    def wait(channels: list[str], timeout: float) -> None:
        wanted = set(channels)

        def all_posted(fake: SlackFake) -> bool:
            posted = {c.args.get("channel") for c in fake.calls_to("chat.postMessage")}
            return wanted <= posted

        fake.wait_for(all_posted, timeout=timeout)

    return wait


def command_outcomes(metrics_url: str) -> dict[tuple[str, str], int]:
    """eventmesh_bot_commands_total: {(command, outcome): count} (counted when one is done)."""
    text = httpx.get(metrics_url, timeout=5).text
    counts: dict[tuple[str, str], int] = {}
    for line in text.splitlines():
        if not line.startswith("eventmesh_bot_commands_total{"):
            continue
        labels, value = line.rsplit(" ", 1)
        fields = dict(part.split("=", 1) for part in labels[labels.index("{") + 1 : -1].split(","))
        key = (fields["command"].strip('"'), fields["outcome"].strip('"'))
        counts[key] = counts.get(key, 0) + int(float(value))
    return counts


def own_ack_buckets(metrics_url: str, command: str = "/health") -> dict[str, int]:
    """eventmesh_bot_ack_seconds for `command`: {le: count}, cumulative, as the bot measured
    its acks (from the request's arrival in its web app to the ack), warm-up included."""
    text = httpx.get(metrics_url, timeout=5).text
    prefix = f'eventmesh_bot_ack_seconds_bucket{{command="{command}",le="'
    buckets: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith(prefix):
            labels, value = line.rsplit(" ", 1)
            buckets[labels[len(prefix) : labels.index('"', len(prefix))]] = int(float(value))
    return buckets


def ours_work_done(metrics_url: str) -> Callable[[list[str], float], None]:
    """The bot counts a command in eventmesh_bot_commands_total once its work is done."""
    state = {"seen": 0}

    def finished() -> int:
        outcomes = command_outcomes(metrics_url)
        return sum(n for (command, _), n in outcomes.items() if command == "/health")

    def wait(channels: list[str], timeout: float) -> None:
        expected = state["seen"] + len(channels)
        deadline = time.monotonic() + timeout
        while (done := finished()) < expected:
            if time.monotonic() > deadline:
                raise RuntimeError(f"ours: {done}/{expected} commands finished after {timeout}s")
            time.sleep(0.1)  # polling the bot's counter: a condition, not a fixed wait
        state["seen"] = done

    return wait


# ---------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), so p99 of 50 is defined."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def fmt_s(seconds: float) -> str:
    """Seconds to the last Slack call; "-" when there was none (nothing to wait for)."""
    return "-" if math.isnan(seconds) else f"{seconds:.1f} s"


def fmt_ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    ms = seconds * 1000
    return f"{ms:.1f} ms" if ms < 100 else f"{ms:,.0f} ms"


@dataclass(frozen=True)
class Summary:
    p50: float
    p95: float
    p99: float
    max: float
    late: int  # over Slack's 3 s: the user saw an error
    failed: int  # not HTTP 200: Slack shows an error too

    @classmethod
    def of(cls, acks: Sequence[AckSample]) -> Summary:
        seconds = [a.seconds for a in acks]
        return cls(
            p50=percentile(seconds, 50),
            p95=percentile(seconds, 95),
            p99=percentile(seconds, 99),
            max=max(seconds),
            late=sum(s > SLACK_ACK_DEADLINE_S for s in seconds),
            failed=sum(a.status != 200 for a in acks),
        )


def table(rounds: Sequence[Round]) -> str:
    """A Markdown table: each round, then pooled per target, then the ours/naive ratio."""
    header = (
        "| target | round | acks | p50 | p95 | p99 | max | > 3 s | non-200 | all work done |\n"
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    lines = [header]

    def row(name: str, label: str, acks: Sequence[AckSample], done: str) -> Summary:
        s = Summary.of(acks)
        cells = [name, label, str(len(acks))]
        cells += [fmt_ms(v) for v in (s.p50, s.p95, s.p99, s.max)]
        cells += [str(s.late), str(s.failed), done]
        lines.append("| " + " | ".join(cells) + " |")
        return s

    for r in rounds:
        row(r.target, str(r.number), r.acks, fmt_s(r.work_done_s))
    pooled: dict[str, Summary] = {}
    for name in (OURS, NAIVE):
        mine = [r for r in rounds if r.target == name]
        acks = [a for r in mine for a in r.acks]
        done = [r.work_done_s for r in mine if not math.isnan(r.work_done_s)]
        pooled[name] = row(f"**{name}**", "pooled", acks, f"≤ {fmt_s(max(done, default=math.nan))}")
    ours, naive = pooled[OURS], pooled[NAIVE]
    ratios = [
        _ratio(a, b)
        for a, b in (
            (ours.p50, naive.p50),
            (ours.p95, naive.p95),
            (ours.p99, naive.p99),
            (ours.max, naive.max),
        )
    ]
    lines.append("| **ours/naive** | pooled | | " + " | ".join(ratios) + " | | | |")
    return "\n".join(lines)


def _ratio(ours: float, naive: float) -> str:
    """ours/naive, plus "1/k" when ours is clearly faster, since 0.024 is hard to picture."""
    if not ours or not naive:
        return "-"
    ratio = ours / naive
    return f"{ratio:.3f} (1/{1 / ratio:.0f})" if ratio < 0.5 else f"{ratio:.3f}"


def statuses(rounds: Sequence[Round], name: str) -> str:
    counts: dict[int, int] = {}
    for r in rounds:
        if r.target == name:
            for a in r.acks:
                counts[a.status] = counts.get(a.status, 0) + 1
    return ", ".join(f"{n}× {code or 'no response'}" for code, n in sorted(counts.items()))


# ---------------------------------------------------------------------------------------------
# Setting up and tearing down
# ---------------------------------------------------------------------------------------------


def spawn(argv: list[str], log: Path, cwd: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env)


def start_demo(stack: contextlib.ExitStack, tmp: Path, latency_ms: int) -> str:
    demo = start_demo_service(tmp, "demo")
    stack.callback(stop_process, demo.process)
    # Set after the readiness probe so the probe itself is not slowed down.
    demo.set_faults(latency_ms=latency_ms)
    return demo.url


def start_ours(
    stack: contextlib.ExitStack,
    tmp: Path,
    fake: SlackFake,
    demo_url: str,
    deploy_mb: int | None,
) -> Target:
    """The real bot, started the way the test suite starts it (INFO logging, its default);
    under load (deploy_mb given) with the storm's fleet and the loopback deploy."""
    workdir = tmp / "bot"
    workdir.mkdir()
    storm = deploy = None
    if deploy_mb is not None:
        deploy = LoopbackDeploy(stack, tmp / "deploy", deploy_mb)
        config, storm = load_config(stack, tmp, workdir / "eventmesh.yml", demo_url, deploy)
    else:
        config = write_config(workdir / "eventmesh.yml", {ENVIRONMENT: demo_url})
    process, url, log = start_bot(
        workdir,
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=fake.api_url,
        EVENTMESH_CONFIG=str(config),
    )
    stack.callback(stop_process, process)
    work_done = ours_work_done(f"{url}/metrics")
    return Target(
        OURS,
        url + EVENTS_PATH,
        process,
        log,
        work_done,
        health_all_first=deploy is not None,
        storm=storm,
        deploy=deploy,
        metrics_url=f"{url}/metrics",
    )


def load_config(
    stack: contextlib.ExitStack, tmp: Path, path: Path, demo_url: str, deploy: LoopbackDeploy
) -> tuple[Path, Callable[[], None]]:
    """--under-load: the benchmark's environment, a healthy fleet and the ones that fail once
    the storm starts (its healthz answers 503), all checked every LOAD_INTERVAL with alerts on
    (alerts, incidents and pages go to the fake's channels), and the deploy's environment over
    the loopback sshd. The per-user limits are the bot's defaults."""
    healthy = start_demo_service(tmp, "fleet")
    failing = start_demo_service(tmp, "failing")
    for service in (healthy, failing):
        stack.callback(stop_process, service.process)
    healthy.set_faults(latency_ms=200)
    environments = {ENVIRONMENT: demo_url}
    environments |= {f"env{n:03d}": healthy.url for n in range(1, LOAD_FLEET + 1)}
    environments |= {f"failing{n:02d}": failing.url for n in range(1, LOAD_FAILING + 1)}
    config = alerts_config(
        path,
        environments,
        alerts_channel=new_channel(),
        incidents_channel=new_channel(),
        check_interval=LOAD_INTERVAL,
        access={"deployers": [CONSOLE_USER, DEPLOYER]},
        ssh=deploy.ssh_section(),
    )
    # alerts_config writes local environments from URLs; the deploy's has its own entry.
    written = json.loads(config.read_text())
    written["environments"][DEPLOY_ENVIRONMENT] = deploy.environment(LOAD_INTERVAL)
    config.write_text(json.dumps(written, indent=2))
    return config, lambda: failing.set_faults(healthz_status=503)


def start_naive(stack: contextlib.ExitStack, tmp: Path, fake: SlackFake, demo_url: str) -> Target:
    port = free_port()
    log = tmp / "naive.log"
    process = spawn(
        [
            sys.executable,
            "-m",
            "benchmarks.ack_latency",
            "naive-app",
            "--port",
            str(port),
            "--api-url",
            fake.api_url,
            "--health-url",
            f"{demo_url}/healthz",
        ],
        log,
        REPO,
        clean_env(),
    )
    stack.callback(stop_process, process)
    url = f"http://127.0.0.1:{port}"
    wait_until_serving(f"{url}/healthz", process, log)
    return Target(NAIVE, url + EVENTS_PATH, process, log, naive_work_done(fake))


def start_floor(stack: contextlib.ExitStack, tmp: Path) -> str:
    """benchmarks/answer_at_once.py on uvicorn: its /slack/events URL."""
    port = free_port()
    log = tmp / "floor.log"
    argv = [sys.executable, "-m", "uvicorn", "benchmarks.answer_at_once:app", "--port", str(port)]
    process = spawn([*argv, "--log-level", "warning"], log, REPO, clean_env())
    stack.callback(stop_process, process)
    url = f"http://127.0.0.1:{port}"
    wait_until_serving(f"{url}/healthz", process, log)
    return url + EVENTS_PATH


def run(
    concurrency: int, rounds: int, latency_ms: int, under_load: bool = False, deploy_mb: int = 0
) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="ack-latency-"))
    # Worst case: every check takes the injected latency, 5 at a time (Bolt's executor).
    drain_timeout = DRAIN_BASE_TIMEOUT_S + concurrency * latency_ms / 1000
    completed: list[Round] = []
    began = time.monotonic()
    try:
        with contextlib.ExitStack() as stack:
            fake = stack.enter_context(SlackFake(bot_token=BOT_TOKEN))
            demo_url = start_demo(stack, tmp, latency_ms)
            targets = [
                start_ours(stack, tmp, fake, demo_url, deploy_mb if under_load else None),
                start_naive(stack, tmp, fake, demo_url),
            ]
            floor_url = start_floor(stack, tmp)
            floor: list[AckSample] = []
            for target in targets:
                warm_up(target, fake, drain_timeout)
            posts_before = len(fake.calls_to("chat.postMessage"))
            for target in targets:
                if target.storm is not None:
                    target.storm()  # the alerts fire during the first rounds
            for number in range(1, rounds + 1):
                for target in targets:
                    result = run_round(target, number, fake, concurrency, drain_timeout)
                    completed.append(result)
                    s = Summary.of(result.acks)
                    print(
                        f"round {number} {target.name:5}: p50 {fmt_ms(s.p50)}, "
                        f"max {fmt_ms(s.max)}, {s.late} over 3 s, {s.failed} non-200, "
                        f"{result.reports}/{len(result.acks)} reports, "
                        f"work done in {fmt_s(result.work_done_s)}",
                        file=sys.stderr,
                    )
                # The same burst to a server that answers at once, under the same load.
                floor += burst(floor_url, fake, concurrency)
            for target in targets:
                if target.process.poll() is not None:
                    raise RuntimeError(f"{target.name} exited early; see {target.log}")
            bursts = {ack.channel for result in completed for ack in result.acks}
            storm_posts = sum(
                1
                for call in fake.calls_to("chat.postMessage")[posts_before:]
                if call.args.get("channel") not in bursts
            )
            outcomes = command_outcomes(targets[0].metrics_url or "")
            own_acks = own_ack_buckets(targets[0].metrics_url or "")
    except BaseException:
        print(f"ack_latency: stopped before the end; logs kept in {tmp}", file=sys.stderr)
        raise
    shutil.rmtree(tmp, ignore_errors=True)

    print(
        f"/health {ENVIRONMENT} ack latency, {concurrency} concurrent signed commands per round, "
        f"{rounds} interleaved rounds per target, demo service latency {latency_ms} ms"
    )
    if under_load:
        print(
            f"ours under load: {LOAD_FLEET} healthy and {LOAD_FAILING} environments that start "
            f"failing (healthz 503) after the warm-up, all checked every {LOAD_INTERVAL} with "
            f"alerts on, a `/deploy` over a loopback sshd ({deploy_mb} MB random payload) whose "
            f"upload is running when a `/health all` over all {LOAD_FLEET + LOAD_FAILING + 2} "
            f"and then the burst are sent; {storm_posts} Slack posts besides the bursts' "
            "during the rounds (alerts, incident cards, pages, reports, deploys)"
        )
        for result in completed:
            if result.deploy is not None:
                d = result.deploy
                print(
                    f"round {result.number} deploy: {d.result}; its upload running at the "
                    f"burst's first send / last ack: {_yes(d.upload_at_burst_start)} / "
                    f"{_yes(d.upload_at_burst_end)}; {d.upload_line}"
                )
    print(
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"slack_bolt {version('slack_bolt')}, slack_sdk {version('slack_sdk')}, "
        f"uvicorn {version('uvicorn')}; {time.monotonic() - began:.0f} s total"
    )
    print()
    print(table(completed))
    print()
    f = Summary.of(floor)
    print(
        f"the client's floor (the same bursts, same rounds, to benchmarks/answer_at_once.py): "
        f"p50 {fmt_ms(f.p50)}, p99 {fmt_ms(f.p99)}, max {fmt_ms(f.max)}, {f.failed} non-200"
    )
    for name in (OURS, NAIVE):
        print(f"{name} HTTP statuses: {statuses(completed, name)}")
    print(
        "ours commands by outcome (eventmesh_bot_commands_total, warm-up included): "
        + ", ".join(f"{c} {o} {n}" for (c, o), n in sorted(outcomes.items()))
    )
    total = own_acks.get("+Inf", 0)
    print(
        "ours by its own measure (eventmesh_bot_ack_seconds, from the request's arrival in the "
        f"app to its ack, warm-up included): of {total} /health acks, "
        + ", ".join(
            f"{own_acks.get(le, 0)} within {float(le) * 1000:.0f} ms"
            for le in ("0.01", "0.025", "0.05", "0.1")
        )
    )
    reports = sum(r.reports for r in completed if r.target == OURS)
    acked = sum(len(r.acks) for r in completed if r.target == OURS)
    print(f"ours burst commands with a report in their channel: {reports} of {acked}")
    return 0


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ack_latency",
        description="Ack latency of /health under a burst: this bot vs a naive sync Bolt app.",
    )
    parser.add_argument("--concurrency", type=int, default=50, help="commands per burst")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per target, interleaved")
    parser.add_argument(
        "--latency-ms", type=int, default=1000, help="latency injected into the demo service"
    )
    parser.add_argument(
        "--under-load",
        action="store_true",
        help="ours: an alert storm, a deploy over a loopback sshd and /health all too",
    )
    parser.add_argument(
        "--deploy-mb",
        type=int,
        default=DEPLOY_MB,
        help="--under-load: MB of random payload in the deploy's package",
    )
    args = parser.parse_args(argv)
    if args.concurrency < 1 or args.rounds < 1 or args.latency_ms < 0:
        parser.error("--concurrency and --rounds must be at least 1, --latency-ms at least 0")
    return args


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["naive-app"]:
        return naive_app_main(argv[1:])
    args = parse_args(argv)
    # SIGTERM's default ends the process without unwinding, which would leave the bot, the
    # demo service and the naive app running; as an exception it goes through run's cleanup.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    return run(args.concurrency, args.rounds, args.latency_ms, args.under_load, args.deploy_mb)


if __name__ == "__main__":
    sys.exit(main())
