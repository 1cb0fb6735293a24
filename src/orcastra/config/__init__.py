"""Orcastra's configuration: the schema, and loading it from a YAML file, legacy files and environment.

``load_config`` is the one way in: it merges every source, validates once, and raises a ``ConfigError``
that lists every problem with its file, field path and what was expected. ``load_config_report`` gives the
same configuration with the loader's notes and the legacy-mode summary line (``LoadReport``).
"""

from orcastra.config.load import DEFAULT_CONFIG_PATH, LoadReport, load_config, load_config_report, resolve_config_path
from orcastra.config.model import (
    ApiSettings,
    AuditSettings,
    CommandSettings,
    Config,
    DockerSettings,
    LeaderElectionSettings,
    LoggingSettings,
    ReconcileSettings,
    RunSettings,
    TlsSettings,
)
from orcastra.domain.labels import (
    LABEL_KEY_RE,
    LABEL_VALUE_RE,
    ORCASTRA_LABEL_PREFIX,
    OWNED_LABELS_KEY,
    check_label_key,
    check_label_value,
)
from orcastra.features.bootstrap.settings import BootstrapSettings
from orcastra.features.colocation.settings import AnchorSettings
from orcastra.features.inventory import NodeSettings
from orcastra.features.rebalance.settings import RebalanceSettings
from orcastra.features.static_labels.settings import LabelSettings

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "LABEL_KEY_RE",
    "LABEL_VALUE_RE",
    "ORCASTRA_LABEL_PREFIX",
    "OWNED_LABELS_KEY",
    "AnchorSettings",
    "ApiSettings",
    "AuditSettings",
    "BootstrapSettings",
    "CommandSettings",
    "Config",
    "DockerSettings",
    "LabelSettings",
    "LeaderElectionSettings",
    "LoadReport",
    "LoggingSettings",
    "NodeSettings",
    "RebalanceSettings",
    "ReconcileSettings",
    "RunSettings",
    "TlsSettings",
    "check_label_key",
    "check_label_value",
    "load_config",
    "load_config_report",
    "resolve_config_path",
]
