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

    def __init__(self, model: str, version: str, detail: str, kind: str = "exception") -> None:
        super().__init__(f"model {model!r} version {version!r} failed at inference: {detail}")
        self.model = model
        self.version = version
        self.detail = detail
        # "exception" (it raised) or "invalid_output" (its answer broke its own signature)
        self.kind = kind


class FlagNotFound(GatewayError):
    """No flag by that key is stored."""


class ReleaseNotFound(GatewayError):
    """No release flag names that model."""
