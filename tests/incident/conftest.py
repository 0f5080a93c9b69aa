from tests.gateway.conftest import anyio_backend, sink, sock

__all__ = ["anyio_backend", "sink", "sock"]
