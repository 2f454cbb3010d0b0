"""The layers stay visible: handlers -> bot.slack -> bot.runbook -> bot.transport / bot.store."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import REPO


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def modules(folder: str) -> dict[str, set[str]]:
    return {
        str(path.relative_to(REPO)): imports(path) for path in sorted((REPO / folder).rglob("*.py"))
    }


def offenders(folder: str, forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    return [
        f"{module} imports {name}"
        for module, names in modules(folder).items()
        if module not in allowed
        for name in names
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    ]


def test_only_bot_slack_imports_bolt() -> None:
    bolt_users = offenders("bot", ("slack_bolt",))
    assert bolt_users and all(o.startswith("bot/slack/") for o in bolt_users), bolt_users


def test_the_runbook_knows_nothing_of_slack_or_handlers() -> None:
    forbidden = ("bot.slack", "handlers", "slack_bolt", "slack_sdk")
    assert offenders("bot/runbook", forbidden) == []


def test_the_bottom_layers_import_nothing_above_them() -> None:
    above = ("bot.slack", "bot.runbook", "handlers", "slack_bolt", "slack_sdk")
    assert offenders("bot/transport", above) == []
    # The store is a package, one module per concern: every one of them stays at the bottom.
    assert "bot/store/__init__.py" in modules("bot/store")
    assert offenders("bot/store", above) == []
    friends = [
        o
        for o in offenders("bot", above)
        if o.split()[0] in ("bot/clock.py", "bot/telemetry.py", "bot/workers.py")
    ]
    assert friends == []


def test_the_runbook_writes_no_slack_markup() -> None:
    # Mentions (<@U…>, <!channel>) are the chat layer's to render: the runbook hands it ids.
    markup = re.compile(r"<[@!#]")
    found = [
        f"{path.relative_to(REPO)}:{n}"
        for path in sorted((REPO / "bot" / "runbook").rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), start=1)
        if markup.search(line)
    ]
    assert found == []


def test_only_the_composition_root_knows_the_handlers() -> None:
    assert offenders("bot", ("handlers",), allowed=("bot/cli.py",)) == []


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(*folders: str) -> dict[str, set[str]]:
    """Module → the modules of bot/ and handlers/ it imports, at any depth of the file (imports
    under TYPE_CHECKING count: a cycle there is one import away from a real one)."""
    paths = [path for folder in folders for path in sorted((REPO / folder).rglob("*.py"))]
    known = {module_name(path) for path in paths}
    graph: dict[str, set[str]] = {}
    for path in paths:
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                found.add(base)
                # `from bot.slack import blocks` imports the module bot.slack.blocks
                found.update(f"{base}.{alias.name}" for alias in node.names)
        graph[name] = {m for m in found if m in known and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_no_import_cycles() -> None:
    assert cycles(import_graph("bot", "handlers")) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
