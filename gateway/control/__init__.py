"""The control plane: release flags kept in the store, validated, audited and put in force."""

from gateway.control.releases import ReleaseControl

__all__ = ["ReleaseControl"]
