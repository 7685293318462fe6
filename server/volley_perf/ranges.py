"""Parsing of ``--concurrency-range``, ``--request-rate-range`` and ``--shape`` values."""

from __future__ import annotations

from collections.abc import Callable

from .errors import UsageError

#: Upper bound on the number of levels one range may expand to.
MAX_LEVELS = 1000


def parse_concurrency_range(text: str) -> list[int]:
    """Expand a concurrency range into its levels.

    Forms: ``N``; ``START:END`` (step 1); ``START:END:STEP`` (linear);
    ``START:END:xF`` (multiply by F each level, e.g. ``1:64:x2``); ``A,B,C`` (explicit list).
    The end is included when the steps land on it.
    """
    levels: list[int] = []
    for value in _expand(text, "--concurrency-range", int):
        level = int(value)
        if level not in levels:
            levels.append(level)
    return levels


def parse_rate_range(text: str) -> list[float]:
    """Expand a request-rate range (requests per second, floats allowed) into its levels."""
    return _expand(text, "--request-rate-range", float)


def _expand(text: str, flag: str, kind: type[int] | type[float]) -> list[float]:
    spec = text.strip()
    if not spec:
        raise UsageError(f"bad {flag} '{text}': empty")
    if "," in spec:
        values = [_number(part, text, flag, kind) for part in spec.split(",")]
        for v in values:
            _check_positive(v, text, flag)
        return values
    parts = spec.split(":")
    if len(parts) > 3:
        raise UsageError(f"bad {flag} '{text}': expected START[:END[:STEP]]")
    start = _number(parts[0], text, flag, kind)
    end = _number(parts[1], text, flag, kind) if len(parts) > 1 else start
    _check_positive(start, text, flag)
    if end < start:
        raise UsageError(f"bad {flag} '{text}': end {end:g} is below start {start:g}")
    step_text = parts[2].strip() if len(parts) == 3 else "1"
    if step_text[:1] in ("x", "*"):
        factor = _number(step_text[1:], text, flag, float)
        if factor <= 1:
            raise UsageError(f"bad {flag} '{text}': the factor after 'x' must be above 1")
        return _levels(start, end, lambda v: v * factor, text, flag)
    step = _number(step_text, text, flag, kind)
    if step <= 0:
        raise UsageError(f"bad {flag} '{text}': step must be positive")
    return _levels(start, end, lambda v: v + step, text, flag)


def _levels(
    start: float, end: float, advance: Callable[[float], float], text: str, flag: str
) -> list[float]:
    levels: list[float] = []
    value = start
    # A tiny tolerance keeps float steps such as 0.1 from missing the end by rounding.
    while value <= end * (1 + 1e-9):
        levels.append(value)
        if len(levels) > MAX_LEVELS:
            raise UsageError(f"bad {flag} '{text}': more than {MAX_LEVELS} levels")
        value = advance(value)
    return levels


def _number(part: str, text: str, flag: str, kind: type[int] | type[float]) -> float:
    try:
        return kind(part.strip())
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise UsageError(f"bad {flag} '{text}': '{part.strip()}' is not {noun}") from None


def _check_positive(value: float, text: str, flag: str) -> None:
    if value <= 0:
        raise UsageError(f"bad {flag} '{text}': values must be positive")


def parse_shapes(specs: list[str]) -> dict[str, list[int]]:
    """Parse repeated ``--shape NAME:d1,d2,...`` values into ``{NAME: [d1, d2, ...]}``."""
    shapes: dict[str, list[int]] = {}
    for spec in specs:
        name, sep, dims_text = spec.rpartition(":")
        if not sep or not name or not dims_text.strip():
            raise UsageError(f"bad --shape '{spec}': expected NAME:d1,d2,...")
        try:
            dims = [int(d) for d in dims_text.split(",")]
        except ValueError:
            raise UsageError(f"bad --shape '{spec}': dimensions must be integers") from None
        if any(d < 0 for d in dims):
            raise UsageError(f"bad --shape '{spec}': dimensions must be >= 0")
        shapes[name] = dims
    return shapes


#: Datatypes ``--input`` accepts.
DATATYPES = frozenset(
    ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
     "FP16", "FP32", "FP64", "BF16", "BYTES")
)  # fmt: skip


def parse_inputs(specs: list[str]) -> list[tuple[str, str, list[int]]]:
    """Parse repeated ``--input NAME:DATATYPE:d1,d2`` into ``(name, datatype, dims)``."""
    declared: list[tuple[str, str, list[int]]] = []
    for spec in specs:
        name, datatype, dims_text = [*spec.rsplit(":", 2), "", ""][:3]
        if not name or not datatype or not dims_text.strip() or spec.count(":") < 2:
            raise UsageError(f"bad --input '{spec}': expected NAME:DATATYPE:d1,d2,...")
        if datatype.upper() not in DATATYPES:
            raise UsageError(
                f"bad --input '{spec}': unknown datatype '{datatype}' "
                f"(one of {', '.join(sorted(DATATYPES))})"
            )
        try:
            dims = [int(d) for d in dims_text.split(",")]
        except ValueError:
            raise UsageError(f"bad --input '{spec}': dimensions must be integers") from None
        if any(d < -1 for d in dims):
            raise UsageError(f"bad --input '{spec}': dimensions must be >= -1")
        if any(n == name for n, _, _ in declared):
            raise UsageError(f"bad --input '{spec}': input '{name}' is declared twice")
        declared.append((name, datatype.upper(), dims))
    return declared
