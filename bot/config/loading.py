"""Reading the config file: YAML, every problem as one line naming its key, check-config."""

from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    ValidationError,
)

from bot.config.fields import ConfigError, _describe, _key_path, _one_line
from bot.config.model import Config

# --- loading -------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, which PyYAML would resolve by keeping the last."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("", "file not found") from None
    except IsADirectoryError:
        raise ConfigError("", "is a directory, not a config file") from None
    except UnicodeDecodeError:
        raise ConfigError("", "is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError("", f"cannot read the file: {exc.strerror}") from None
    try:
        return yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "cannot parse"
        raise ConfigError("", f"YAML error{where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError("", f"YAML error: {_one_line(str(exc))}") from None


def load_config(path: str | Path) -> Config:
    """Read and validate a config file. Any problem raises ConfigError (see its `errors`)."""
    data = _read_yaml(Path(path))
    if data is None:
        raise ConfigError("", "the file is empty (it needs at least an environments section)")
    if not isinstance(data, dict):
        sections = ", ".join(Config.model_fields)
        raise ConfigError("", f"the top level must be a mapping of sections ({sections})")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = list(dict.fromkeys((_key_path(e["loc"]), _describe(e)) for e in exc.errors()))
        (key, problem), *rest = problems
        raise ConfigError(key, problem, tuple(ConfigError(k, p) for k, p in rest)) from None


def check_config(path: str | Path) -> tuple[bool, list[str]]:
    """(ok, lines to print) for `eventmesh-bot check-config`: one line per problem."""
    try:
        config = load_config(path)
    except ConfigError as err:
        return False, [f"{path}: {problem}" for problem in err.errors]
    count = len(config.environments)
    names = ", ".join(config.environments)
    plural = "" if count == 1 else "s"
    policy = [f"  {name}: a Critical alert {config.paging(name)}" for name in config.environments]
    return True, [f"{path}: OK ({count} environment{plural}: {names})", *policy]


# --- turning pydantic's errors into lines --------------------------------------------------
