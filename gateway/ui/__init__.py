"""The web dashboard under `/ui`: pages for on-call and release managers, a client of the
admin API (same tokens, as a session cookie), and the history its charts draw.

`dashboard.Dashboard` wires it; `session` is imported by the admin API's auth guards, so this
package imports nothing at its top.
"""
