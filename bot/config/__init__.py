"""The bot's config file (config/eventmesh.yml): typed, frozen models and a loader.

Operators edit this file by hand, so every problem is reported as one line naming the key
path ("environments.dev.hosts[0]: 'deploy@' is not user@host[:port]"), all problems of a
file at once, and unknown keys are errors: a misspelt key silently ignored is a setting
that never took effect.

fields: the field types and how a problem names its key; environments: an environment
(hosts, thresholds, deploy, paging); escalation: levels and rotations; model: Config and its
other sections; loading: reading the file.
"""

from bot.config.environments import DeploySettings, Environment, Host, Threshold, Thresholds
from bot.config.escalation import Escalation, RotationSettings
from bot.config.fields import ConfigError, is_slack_id, parse_duration
from bot.config.loading import check_config, load_config
from bot.config.model import (
    Access,
    AlertSettings,
    CiSettings,
    Config,
    LimitSettings,
    MetricsSettings,
    Rate,
    RetentionSettings,
    SshSettings,
)

__all__ = [
    "Access",
    "AlertSettings",
    "CiSettings",
    "Config",
    "ConfigError",
    "DeploySettings",
    "Environment",
    "Escalation",
    "Host",
    "LimitSettings",
    "MetricsSettings",
    "Rate",
    "RetentionSettings",
    "RotationSettings",
    "SshSettings",
    "Threshold",
    "Thresholds",
    "check_config",
    "is_slack_id",
    "load_config",
    "parse_duration",
]
