"""How the garbage collector writes names, sizes and durations in its reasons and notes.

Names come from the Engine, which whoever owns a worker controls: a tag or a volume name may hold a newline
that would fake another log line, or an escape sequence that would drive a terminal. ``shown`` escapes them
(``orcastra.domain.wording.one_line``) and cuts the name to 200 characters; ``wording.printable`` is not used
because it cuts at 60, too short for a registry host, a repository path and a tag together.
"""

from __future__ import annotations

from orcastra.domain.wording import one_line

SHOWN_CHARS = 200
_SIZE_UNITS = ("kB", "MB", "GB", "TB", "PB")  # decimal, as the docker CLI shows sizes
_DURATION_UNITS = ((86400.0, "day"), (3600.0, "hour"), (60.0, "minute"))


def shown(text: str) -> str:
    """``text`` for a reason or a note: every unprintable character escaped (``\\n``, ``\\x1b``), at most
    200 characters (then ``...``)."""
    out = one_line(text[:SHOWN_CHARS])
    if len(text) <= SHOWN_CHARS and len(out) <= SHOWN_CHARS:
        return out
    return out[:SHOWN_CHARS] + "..."


def size(n: float) -> str:
    """Bytes as the docker CLI shows them: ``512 B``, ``1.5 MB``, ``12.3 GB``."""
    if abs(n) < 1000:
        return f"{n:.0f} B"
    value = n / 1000
    step = 0
    while abs(value) >= 1000 and step < len(_SIZE_UNITS) - 1:
        value /= 1000
        step += 1
    return f"{value:.1f} {_SIZE_UNITS[step]}"


def duration(seconds: float) -> str:
    """A duration in its largest whole unit, to one decimal: ``45 seconds``, ``1.5 hours``, ``3 days``."""
    for unit_seconds, unit in _DURATION_UNITS:
        if seconds >= unit_seconds:
            return _count(seconds / unit_seconds, unit)
    return _count(seconds, "second")


def _count(value: float, unit: str) -> str:
    text = f"{value:.1f}".removesuffix(".0")
    return f"{text} {unit}{'' if text == '1' else 's'}"
