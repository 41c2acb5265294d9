"""Shape limits for what a device may put in an event's `attrs` / `media`.

Pure. Checked before serialising, so hostile input becomes a DLQ entry with a reason
instead of an exception: orjson refuses to write nesting deeper than 254 (the bridge
used to die on that), silently writes NaN as null, and reads integers above 2^64 as
floats. Numbers must fit JSON's interoperable range, ±2^53: consumers in other
languages (JavaScript, JSON Schema tools) lose precision beyond it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

MAX_SAFE_INTEGER = 2**53


@dataclass(frozen=True)
class Limits:
    max_depth: int = 16  # containers nested in one another; `{}` is depth 1
    max_items: int = 1000  # keys and list items, counted over the whole value
    max_string_chars: int = 4096  # each string, keys included


DEFAULT = Limits()


@dataclass(frozen=True)
class Violation:
    reason_code: str  # too_deep | too_many_items | string_too_long | number_out_of_range | unserialisable
    reason: str


def check(value: Any, limits: Limits = DEFAULT, what: str = "attrs") -> Violation | None:
    """The first limit `value` breaks, or None. Iterative: any depth is safe to inspect."""
    items = 0
    stack: list[tuple[Any, int, str]] = [(value, 1, what)]
    while stack:
        node, depth, path = stack.pop()
        if isinstance(node, dict):
            children = []
            for k, v in node.items():
                if not isinstance(k, str):
                    return Violation("unserialisable", f"{path} has a non-string key {type(k).__name__}")
                if len(k) > limits.max_string_chars:
                    return Violation("string_too_long", f"a key in {path} has {len(k)} chars, limit {limits.max_string_chars}")
                children.append((v, f"{path}.{k[:40]}"))
        elif isinstance(node, (list, tuple)):
            children = [(v, f"{path}[{i}]") for i, v in enumerate(node)]
        else:
            problem = _scalar(node, limits, path)
            if problem:
                return problem
            continue
        if depth > limits.max_depth:
            return Violation("too_deep", f"{what} nests deeper than {limits.max_depth} levels (at {path[:120]})")
        items += len(children)
        if items > limits.max_items:
            return Violation("too_many_items", f"{what} has more than {limits.max_items} keys and items in total")
        stack.extend((v, depth + 1, p) for v, p in children)
    return None


def _scalar(node: Any, limits: Limits, path: str) -> Violation | None:
    if node is None or isinstance(node, bool):
        return None
    if isinstance(node, str):
        if len(node) > limits.max_string_chars:
            return Violation("string_too_long", f"{path[:120]} has {len(node)} chars, limit {limits.max_string_chars}")
        return None
    if isinstance(node, int):
        if not -MAX_SAFE_INTEGER <= node <= MAX_SAFE_INTEGER:
            return Violation("number_out_of_range", f"{path[:120]} is an integer beyond ±2^53")
        return None
    if isinstance(node, float):
        # orjson reads integer literals beyond 2^64 as floats: the range check catches them too
        if not math.isfinite(node) or abs(node) > MAX_SAFE_INTEGER:
            return Violation("number_out_of_range", f"{path[:120]} is not a finite number within ±2^53")
        return None
    return Violation("unserialisable", f"{path[:120]} is a {type(node).__name__}, not a JSON value")
