"""Domain errors. They know nothing of HTTP; `gateway.http.errors` maps them at the edge."""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class InvalidName(GatewayError):
    """A model or version name that could escape the repository or is malformed."""


class ManifestError(GatewayError):
    """A manifest that cannot be read, parsed or trusted."""


class IntegrityError(ManifestError):
    """An artifact whose sha256 differs from its manifest."""


class ModelNotFound(GatewayError):
    """No model by that name is in the repository."""


class VersionNotFound(GatewayError):
    """The model exists but not that version."""


class ModelNotReady(GatewayError):
    """The version exists but failed to load (or is still loading)."""


class InvalidRequest(GatewayError):
    """A request the client must fix: malformed body, wrong datatype or shape, bad values."""


class PayloadTooLarge(InvalidRequest):
    """A request over a configured size or batch limit."""


class UnsupportedMediaType(InvalidRequest):
    """A request body in a content type the endpoint does not speak."""


class InferenceFailed(GatewayError):
    """A loaded version raised, or answered with output that breaks its signature."""

    def __init__(
        self, model: str, version: str, detail: str, kind: str = "exception", *, verb: str = ""
    ) -> None:
        super().__init__(
            f"model {model!r} version {version!r} {verb or 'failed at inference'}: {detail}"
        )
        self.model = model
        self.version = version
        self.detail = detail
        # "exception" (it raised), "invalid_output" (its answer broke its own signature),
        # "timeout" (no answer within its deadline) or "overloaded" (its queue was full)
        self.kind = kind


class InferenceTimeout(InferenceFailed):
    """A version that did not answer within its deadline (the request was abandoned)."""

    def __init__(self, model: str, version: str, timeout_ms: float) -> None:
        super().__init__(
            model,
            version,
            f"no answer within its {timeout_ms:g} ms deadline",
            "timeout",
            verb="timed out",
        )
        self.timeout_ms = timeout_ms


class Overloaded(InferenceFailed):
    """A version whose queue was full: the request was refused at once, never queued."""

    RETRY_AFTER_S = 1

    def __init__(self, model: str, version: str, max_queue: int) -> None:
        super().__init__(
            model,
            version,
            f"its queue is full ({max_queue} requests waiting); retry later",
            "overloaded",
            verb="is overloaded",
        )
        self.max_queue = max_queue


class FlagNotFound(GatewayError):
    """No flag by that key is stored."""


class ReleaseNotFound(GatewayError):
    """No release flag names that model."""
