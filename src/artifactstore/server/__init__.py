"""The HTTP server: a thin ASGI layer over :class:`artifactstore.store.Store`."""
