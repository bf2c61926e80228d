"""Static checks of a flag's JsonLogic targeting, before the evaluator ever runs it.

flagd only finds an unknown operator or a variant name that does not exist when a request
reaches that branch; these checks find them at load, with the JSON pointer of the culprit.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from openfeature.contrib.tools.flagd.core.targeting.custom_ops import MAX_WEIGHT_SUM
from openfeature.contrib.tools.flagd.core.targeting.targeting import OPERATORS

from gateway.flags.diff import pointer_token

# Operators json_logic's apply() handles itself rather than through the operations table.
_CONTROL_OPERATORS = frozenset(
    {"if", "?:", "and", "or", "filter", "reduce", "map", "all", "some", "none"}
)
KNOWN_OPERATORS = frozenset(OPERATORS) | _CONTROL_OPERATORS


def targeting_problems(targeting: Mapping[str, Any], variants: Collection[str]) -> list[str]:
    """What is wrong with `targeting`: unknown operators, answers naming no variant,
    malformed fractional buckets. Empty when nothing is."""
    walker = _Walker(variants)
    walker.walk(targeting, "", answer=True)
    return walker.problems


class _Walker:
    def __init__(self, variants: Collection[str]) -> None:
        self.variants = variants
        self.problems: list[str] = []

    def walk(self, node: Any, path: str, *, answer: bool) -> None:
        """`answer`: whether the value of `node` is what the targeting answers (a variant)."""
        if isinstance(node, bool | str):
            if answer:
                self._check_variant(str(node).lower() if isinstance(node, bool) else node, path)
            return
        if isinstance(node, list):
            for index, item in enumerate(node):
                self.walk(item, f"{path}/{index}", answer=False)
            return
        if not isinstance(node, dict) or len(node) != 1:
            return  # a literal (json_logic reads only single-key objects as operations)
        ((operator, args),) = node.items()
        here = f"{path}/{pointer_token(operator)}"
        if operator not in KNOWN_OPERATORS:
            hint = " ($evaluators references are not supported)" if operator == "$ref" else ""
            self.problems.append(f"targeting at {here} uses unknown operator {operator!r}{hint}")
            return
        items: list[Any] = args if isinstance(args, list) else [args]

        def at(index: int) -> str:
            return f"{here}/{index}" if isinstance(args, list) else here

        if operator in ("if", "?:"):
            last = len(items) - 1
            for index, item in enumerate(items):
                is_answer = index % 2 == 1 or index == last
                self.walk(item, at(index), answer=answer and is_answer)
        elif operator == "fractional":
            self._fractional(items, here, at, answer=answer)
        else:
            for index, item in enumerate(items):
                self.walk(item, at(index), answer=False)

    def _check_variant(self, name: str, path: str) -> None:
        if name not in self.variants:
            known = ", ".join(repr(v) for v in sorted(self.variants))
            self.problems.append(
                f"targeting at {path or '/'} answers variant {name!r}, "
                f"which is not one of the variants ({known})"
            )

    def _fractional(
        self, items: list[Any], here: str, at: Callable[[int], str], *, answer: bool
    ) -> None:
        start = 0
        if items and not isinstance(items[0], list):
            self.walk(items[0], at(0), answer=False)  # an explicit bucketing expression
            start = 1
        if start == len(items):
            self.problems.append(f"fractional at {here} has no buckets")
            return
        total: int | None = 0
        for index in range(start, len(items)):
            bucket, path = items[index], at(index)
            if not isinstance(bucket, list) or not 1 <= len(bucket) <= 2:
                self.problems.append(f"fractional bucket at {path} must be [variant, weight]")
                continue
            self.walk(bucket[0], f"{path}/0", answer=answer)
            weight = bucket[1] if len(bucket) == 2 else 1
            if isinstance(weight, dict):
                self.walk(weight, f"{path}/1", answer=False)
                total = None  # computed at evaluation time
            elif isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
                self.problems.append(
                    f"fractional bucket at {path} has weight {weight!r}; "
                    "a weight is a non-negative integer"
                )
            elif total is not None:
                total += weight
        if total == 0:
            self.problems.append(f"fractional at {here} has weights that add up to 0")
        elif total is not None and total > MAX_WEIGHT_SUM:
            self.problems.append(f"fractional at {here} has weights over {MAX_WEIGHT_SUM}")
