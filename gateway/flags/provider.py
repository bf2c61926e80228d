"""The gateway's own OpenFeature provider: flagd-core evaluates, `set_flags` swaps the set.

Evaluation delegates straight to `FlagdCore` (which holds an RLock of its own for the
duration of one resolution); the provider adds no copy and no lock on that path.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEventDetails
from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType
from openfeature.provider import AbstractProvider, Metadata

from gateway.flags.errors import InvalidFlag


class ReleaseFlagProvider(AbstractProvider):
    """OpenFeature provider over flagd flag definitions, evaluated by openfeature-flagd-core."""

    def __init__(self, flags: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        super().__init__()
        self._metadata = Metadata(name="release-gateway-flagd")
        self._core = FlagdCore()
        if flags:
            self.set_flags(flags)

    def set_flags(self, flags: Mapping[str, Mapping[str, Any]]) -> list[str]:
        """Replace the whole flag set (flag key -> flagd flag object) in one step.

        Evaluations see either the old set or the new one, never a mix; on InvalidFlag the old
        set stays. The caller's dicts are neither kept nor changed. Returns the changed keys.
        """
        # flagd-core's loader edits the dicts it is given, and must not share ours.
        configuration = {"flags": copy.deepcopy(dict(flags))}
        try:
            changed = self._core.set_flags_and_get_changed_keys(configuration)
        except Exception as exc:  # ParseError, or TypeError on shapes flagd-core trips over
            detail = str(exc) or str(exc.__cause__ or "") or type(exc).__name__
            raise InvalidFlag(f"flagd rejects the flag set: {detail}") from exc
        if changed:
            self.emit_provider_configuration_changed(ProviderEventDetails(flags_changed=changed))
        return changed

    def get_metadata(self) -> Metadata:
        return self._metadata

    def resolve_boolean_details(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        return self._core.resolve_boolean_value(flag_key, default_value, evaluation_context)

    def resolve_string_details(
        self,
        flag_key: str,
        default_value: str,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[str]:
        return self._core.resolve_string_value(flag_key, default_value, evaluation_context)

    def resolve_integer_details(
        self,
        flag_key: str,
        default_value: int,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[int]:
        return self._core.resolve_integer_value(flag_key, default_value, evaluation_context)

    def resolve_float_details(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[float]:
        return self._core.resolve_float_value(flag_key, default_value, evaluation_context)

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        return self._core.resolve_object_value(flag_key, default_value, evaluation_context)
