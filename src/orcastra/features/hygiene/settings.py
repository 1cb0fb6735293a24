"""The ``hygiene:`` section: what the node agent keeps clean on its node (garbage collection, autoheal, log
rotation).

Every part is off until configured: GC runs on a schedule (``schedule``, cron), when the disk passes a
threshold (``disk_threshold``), or when asked (``orcastra gc``); autoheal restarts unhealthy containers that
opted in by label (or all of them with ``all_containers``); log rotation runs Debian's logrotate over the
operator's configuration directories and Orcastra's own files (``logrotate.enabled``). The earlier tool's
``GC_*`` variables set the same fields (``orcastra.config.env``). docs/hygiene.md explains each rule and why it
is so.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import cronsim
from pydantic import Field, field_validator

from orcastra.domain.fields import DAY_SECONDS, HOUR_SECONDS, WEEK_SECONDS, AbsolutePath, Loc, Section, fail
from orcastra.features.hygiene.logrotate import SIZE_RE, unsafe_path_reason
from orcastra.features.hygiene.thresholds import parse_threshold


def check_cron(expression: str) -> str:
    try:
        cronsim.CronSim(expression, dt.datetime(2026, 1, 1))
    except (cronsim.CronSimError, ValueError) as e:
        raise fail(f"not a cron expression ({e}): {expression!r}") from None
    return expression


def check_zone(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise fail(f"unknown time zone {value!r} (an IANA name such as Europe/Paris)") from None
    return value


class GcSettings(Section):
    """Garbage collection of containers, images and volumes on each node (the earlier tool's ``GC_*``)."""

    # Cron expression (5 fields, as cron(8); GC_CRON). None: no scheduled run.
    schedule: str | None = None
    # The schedule's time zone (IANA name); None: the agent's local time (the TZ variable, else UTC).
    timezone: str | None = None
    # Run when the used space of the filesystem holding `disk_path` passes this: "85%" of it, or a size
    # ("200GiB"). Checked every `check_interval_seconds`; images then go least recently used first.
    disk_threshold: str | None = None
    # A path on the Docker data root's filesystem, as mounted in the agent's container (for a % threshold).
    disk_path: AbsolutePath | None = None
    # A threshold run frees images until the use is this many points (or %) under the threshold.
    disk_target_below_percent: Annotated[float, Field(ge=0, le=90)] = 10.0
    check_interval_seconds: Annotated[float, Field(ge=10, le=DAY_SECONDS)] = 300.0
    # Images: remove unused ones (GC_FORCE_IMAGE_REMOVAL also lets an image with several tags go, all tags).
    remove_images: bool = True
    force_image_removal: bool = True
    keep_per_repository: Annotated[int, Field(ge=0, le=1000)] = 3  # GC_MINIMUM_IMAGES_TO_SAVE
    keep: list[str] = Field(default_factory=list)  # fnmatch patterns on repository:tag never removed
    min_image_age_seconds: Annotated[float, Field(ge=0, le=WEEK_SECONDS * 52)] = HOUR_SECONDS
    # Exited plain containers (not Swarm tasks) older than the grace (GC_FORCE_CONTAINER_REMOVAL,
    # GC_GRACE_PERIOD_SECONDS).
    remove_containers: bool = True
    grace_period_seconds: Annotated[float, Field(ge=0, le=WEEK_SECONDS * 52)] = 10800.0
    # Volumes: anonymous ones nothing mounts (GC_CLEAN_UP_VOLUMES); a named one only if it matches a pattern.
    remove_anonymous_volumes: bool = True
    volume_patterns: list[str] = Field(default_factory=list)
    # List what would go and what it frees, remove nothing (GC_DRY_RUN).
    dry_run: bool = False
    # Where the agent keeps when it last saw each image used (so least-recently-used order survives a restart);
    # None: in memory only. The stack gives the agent a volume at /var/lib/orcastra.
    state_file: AbsolutePath | None = Path("/var/lib/orcastra/gc-last-use.json")
    # Pause between two removals, so a large cleanup never stalls the Engine.
    pace_seconds: Annotated[float, Field(ge=0, le=60)] = 0.2

    @classmethod
    def cross_check(cls, values: Mapping[str, Any]) -> list[tuple[Loc, str]]:
        """A threshold needs a path on the data root's filesystem to measure."""
        if isinstance(values.get("disk_threshold"), str) and values.get("disk_path") is None:
            return [(("disk_path",), "a disk_threshold needs disk_path (the Docker data root, mounted in the agent)")]
        return []

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return check_cron(value) if value is not None else None

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        return check_zone(value)

    @field_validator("disk_threshold")
    @classmethod
    def _threshold(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_threshold(value)
            except ValueError as e:
                raise fail(str(e)) from None
        return value


class AutohealSettings(Section):
    """Restarting unhealthy containers on each node (opt-in by label ``orcastra.autoheal=true``)."""

    enabled: bool = False
    # Every container with a healthcheck, not only those labelled (``orcastra.autoheal=false`` opts out).
    all_containers: bool = False
    # At most this many restarts of one container within the window; then it is reported and left alone.
    max_restarts: Annotated[int, Field(ge=1, le=100)] = 5
    window_seconds: Annotated[float, Field(ge=10, le=DAY_SECONDS)] = 600.0
    backoff_initial_seconds: Annotated[float, Field(ge=0, le=HOUR_SECONDS)] = 10.0
    backoff_max_seconds: Annotated[float, Field(ge=0, le=DAY_SECONDS)] = 300.0
    default_stop_timeout_seconds: Annotated[float, Field(ge=0, le=HOUR_SECONDS)] = 10.0
    # Swarm replaces an unhealthy task itself; act on a task only if it stays unhealthy this long.
    swarm_grace_seconds: Annotated[float, Field(ge=0, le=DAY_SECONDS)] = 60.0
    # Look at every container again this often (events can be missed across an Engine restart).
    resync_interval_seconds: Annotated[float, Field(ge=5, le=DAY_SECONDS)] = 300.0
    # POST a JSON line for every action here (retried 3 times); None: no webhook.
    webhook_url: str | None = None

    @field_validator("webhook_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise fail(f"expected an http:// or https:// URL, found {value[:100]!r}")
        return value


def _default_config_dirs() -> list[Path]:
    return [Path("/etc/orcastra/logrotate.d"), Path("/etc/swarm-orchestration/logrotate.d")]


class LogrotateSettings(Section):
    """Log rotation on each node: Debian's logrotate over the operator's configs and Orcastra's own files."""

    enabled: bool = False
    # Cron expression (5 fields) of the runs; logrotate's state file decides what is due (daily, size...).
    schedule: str = "17 * * * *"
    timezone: str | None = None  # IANA name; None: the agent's local time (TZ, else UTC)
    # Directories (or files) of logrotate configs, as mounted in the agent; a missing one is skipped. The
    # second is where the earlier tool kept its own.
    config_dirs: Annotated[list[AbsolutePath], Field(max_length=32)] = Field(default_factory=_default_config_dirs)
    # logrotate's memory of the last rotation of each log: on a volume, so a restart repeats nothing.
    state_file: AbsolutePath = Path("/var/lib/orcastra/logrotate.status")
    # Rotate Orcastra's own `logging.file` and `audit.path` (when set): by size, copytruncate, compressed.
    own_logs: bool = True
    own_max_size: str = "10M"  # logrotate's size syntax: bytes, or a number with k, M or G
    own_keep: Annotated[int, Field(ge=1, le=1000)] = 5
    run_at_start: bool = True  # one run when the agent starts (the state file makes it idempotent)
    logrotate_binary: str = "logrotate"  # a name looked up in PATH (then /usr/sbin), or an absolute path
    timeout_seconds: Annotated[float, Field(ge=10, le=DAY_SECONDS)] = 900.0

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        return check_cron(value)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        return check_zone(value)

    @field_validator("config_dirs")
    @classmethod
    def _dirs(cls, value: list[Path]) -> list[Path]:
        for path in value:
            if (reason := unsafe_path_reason(str(path))) is not None:
                raise fail(reason)
        if len(set(value)) != len(value):
            raise fail("a directory is listed twice")
        return value

    @field_validator("own_max_size")
    @classmethod
    def _size(cls, value: str) -> str:
        if not SIZE_RE.match(value):
            raise fail(f"expected a size as logrotate writes it (10M, 500k, 1G, or bytes), found {value[:50]!r}")
        return value

    @field_validator("logrotate_binary")
    @classmethod
    def _binary(cls, value: str) -> str:
        if not value or any(ch.isspace() for ch in value) or ("/" in value and not value.startswith("/")):
            raise fail(f"expected a program name or an absolute path, found {value[:100]!r}")
        return value


class HygieneSettings(Section):
    """What the agent does on its node: garbage collection, autoheal and log rotation."""

    gc: GcSettings = Field(default_factory=GcSettings)
    autoheal: AutohealSettings = Field(default_factory=AutohealSettings)
    logrotate: LogrotateSettings = Field(default_factory=LogrotateSettings)
