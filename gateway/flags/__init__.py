"""Release flags: flagd flag definitions whose variants are routes to model versions.

Plain Python, no I/O: the flag document's typed view (`document`), validation
(`validation`), the typed release policy (`policy`), the OpenFeature provider (`provider`),
the per-request router (`router`), release-manager operations (`operations`), the audit diff
(`diff`) and the versions a flag may name (`versions`). Import from the module itself: the
package imports nothing, so that importing one part (the errors, say) does not load the rest.
"""
