"""Execution: how model versions run off the event loop.

`config` reads a version's `execution` manifest object into an `ExecutionConfig`; `batch`
runs several requests as one call and splits the answer back; `executor` is one version's
queues, threads and deadlines; `pool` holds every loaded version's executor.
"""
