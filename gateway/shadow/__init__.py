"""Shadow mode: candidate versions run beside the served one, off the request path.

`runner` runs them within a budget (`jobs` is what it queues); `batch` runs a version's
queued runs together, predicting them as one (`predict`) and turning them into comparison
records (`records`); `compare` and `summary` are the plain-Python comparison and review,
`recorder` batches records to the store, `policy` reads a release's settings, and `service`
puts them together for the composition root. Import from the submodules: the package itself
stays light, since settings (and so every CLI command) read `policy`.
"""
