"""Who may do what: bearer tokens with the roles `viewer` and `release-manager`."""

from gateway.security.tokens import Principal, Role, TokenTable, load_token_table

__all__ = ["Principal", "Role", "TokenTable", "load_token_table"]
