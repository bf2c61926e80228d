"""The HTTP edge: Litestar controllers that only translate between HTTP and the data plane."""
