"""uvicorn's settings for the server, and its HTTP/1.1 protocol with the two limits uvicorn lacks.

uvicorn times out a kept-alive connection only between requests (``timeout_keep_alive``), and only after a first
response: a connection that sends nothing, or sends its headers a byte at a time (slowloris), is kept forever.
Its httptools parser also takes headers of any size (h11's ``h11_max_incomplete_event_size`` applies to h11
only). ``Bounded`` adds, per request: the headers must be complete ``header_timeout`` seconds after the
connection opened or the request's first byte came (else 408, or a plain close when nothing came), and at most
``MAX_HEADER_BYTES`` may arrive before they are (else 431). It hooks only what both uvicorn protocols share
(``connection_made``, ``data_received``, ``on_response_complete``, ``connection_lost`` and ``cycle``, the request
in progress), so it works over httptools and h11 alike.
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus

from .auth import MAX_HEADER_BYTES
from .config import ServerConfig
from .errors import error_body


class Bounded:
    """Mixed in before uvicorn's protocol class (see ``protocol``)."""

    header_timeout: float = ServerConfig.header_timeout

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._waiting = True  # for a request's headers (False while a request is read or answered)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._waiting:
            if self._deadline is None:  # the first byte of a request on a kept-alive connection
                self._arm()
            self._header_bytes += len(data)
        super().data_received(data)
        if not self._waiting or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:  # the headers are in: a request started
            self._waiting = False
            self._disarm()
        elif self._header_bytes > MAX_HEADER_BYTES:
            message = f"The request's headers pass {MAX_HEADER_BYTES} bytes; this server takes at most that."
            self._refuse(431, message, "headers_too_large")

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # uvicorn's keep-alive timer now runs until the next request's first byte; a pipelined request may have
        # started already (a new cycle, still unanswered).
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self._waiting, self._header_bytes = True, 0

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if not self._header_bytes:  # an idle connection: closed as uvicorn closes an idle kept-alive one
            self.transport.close()
            return
        message = (
            f"The request's headers did not arrive within {self.header_timeout:g} s (--header-timeout); "
            "send the whole request at once."
        )
        self._refuse(408, message, "header_timeout")

    def _refuse(self, status: int, message: str, code: str) -> None:
        self._disarm()
        self._waiting = False
        body = error_body(status, message, None, code)
        head = (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head.encode("ascii") + body)
        self.transport.close()


def protocol(header_timeout: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP/1.1 protocol (httptools when installed, else h11) with ``Bounded``'s limits."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    return type("BoundedHTTPProtocol", (Bounded, AutoHTTPProtocol), {"header_timeout": header_timeout})


def uvicorn_config(app, config: ServerConfig, **options):
    """The ``uvicorn.Config`` that serves ``app`` with ``config``'s connection limits; ``options`` add to it."""
    import uvicorn

    options = {"host": config.host, "port": config.port, "access_log": False, **options}
    return uvicorn.Config(
        app,
        http=protocol(config.header_timeout),
        ws="none",  # no WebSocket routes: an upgrade must not hand the connection to another protocol
        timeout_keep_alive=config.keep_alive_timeout,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,  # the same limit when uvicorn runs h11
        **options,
    )
