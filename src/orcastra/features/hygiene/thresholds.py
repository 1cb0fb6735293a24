"""Disk thresholds as written in the config ("85%", "200GiB"): parsed here, without pydantic, so that the
agent process (which must stay small) and the config's validation read them the same way."""

from __future__ import annotations

import re

# "80%", "12.5 %", "20GiB", "500 MB", "1073741824": a share of the filesystem or a size.
_THRESHOLD_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%|[kKMGT]i?B|B)?\s*\Z")
_UNITS = {
    "B": 1,
    "kB": 1000,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
    "KiB": 1024,
    "kiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "TiB": 1024**4,
}


def parse_threshold(text: str) -> tuple[float | None, int | None]:
    """``"80%"`` -> (80.0, None); ``"20GiB"`` -> (None, 21474836480). Raises ValueError with what is expected."""
    match = _THRESHOLD_RE.match(text)
    if match is None:
        raise ValueError(f"expected a percentage (80%) or a size (20GiB, 500MB, bytes), found {text!r}")
    number, unit = float(match.group(1)), match.group(2) or "B"
    if unit == "%":
        if not 0 < number < 100:
            raise ValueError(f"a percentage of the disk must be between 0 and 100, found {text!r}")
        return number, None
    if unit not in _UNITS:
        raise ValueError(f"unknown size unit {unit!r} in {text!r} (B, kB, MB, GB, TB, KiB, MiB, GiB, TiB)")
    size = int(number * _UNITS[unit])
    if size <= 0:
        raise ValueError(f"a size threshold must be positive, found {text!r}")
    return None, size
