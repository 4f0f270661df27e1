"""Keep-alive ``http.client`` connections: the fast path of the client's JSON calls.

The service usually runs on this very host (the kernel's own Jupyter server), where a request
costs the server about a millisecond and ``requests`` + globus-sdk add most of another one in
Python overhead (request preparation, URL re-parsing, adapter and retry machinery); on a
2-core machine shared with the endpoint's workers that overhead doubles. Task submission is
the hot path (DESIGN.md scale targets: thousands of tasks/s, millisecond round trips), so the
client sends its calls over a small pool of keep-alive ``http.client`` connections, and wraps
the answers in the ``requests.Response``/``GlobusHTTPResponse`` objects globus-sdk would
have made: callers, and the errors raised, are the same either way.

Only for plain ``http://`` services without a proxy; anything this path cannot do simply
(TLS, proxies, a connection that broke, a transient 5xx to retry) goes through globus-sdk's
own transport, with its retries.
"""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

import requests
from requests.structures import CaseInsensitiveDict

#: Statuses that globus-sdk retries: such an answer is handed back to its transport to redo.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


#: Bodies up to this size leave in the same ``send`` as the headers.
COALESCE_BYTES = 1 << 20


class _Connection(http.client.HTTPConnection):
    """An HTTP connection tuned for small JSON requests to a local server."""

    _buffer: list[bytes]  # http.client's buffer of header lines

    def connect(self) -> None:
        super().connect()
        # A body sent apart from its headers must not wait for the server's delayed ACK.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _send_output(self, message_body: object = None, encode_chunked: bool = False) -> None:
        # http.client sends headers and body with two send() calls: on loopback that is two
        # wake-ups of the server for one request. Small bodies go out with the headers.
        if (
            isinstance(message_body, bytes)
            and not encode_chunked
            and len(message_body) <= COALESCE_BYTES
        ):
            self._buffer.extend((b"", b""))
            head = b"\r\n".join(self._buffer)
            del self._buffer[:]
            self.send(head + message_body)
            return
        super()._send_output(message_body, encode_chunked)  # type: ignore[misc]


class DirectHTTP:
    """A small pool of keep-alive connections to ``http://host:port``.

    Each request takes a connection for itself (concurrent threads get their own); idle ones
    are kept, up to ``max_idle``, for the next request.
    """

    def __init__(self, base_url: str, timeout: float | None, max_idle: int = 4) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"the direct path serves plain http:// URLs only, not {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.timeout = timeout
        self.max_idle = max_idle
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()
        #: Cookies the server set, sent back as a browser (or a ``requests`` session) would:
        #: Jupyter Server answers a token request that comes without its login cookie by making
        #: up a user and signing a new cookie, which doubles its cost of a small request.
        self._cookies: dict[str, str] = {}

    @staticmethod
    def usable_for(base_url: str, proxies: Mapping[str, str]) -> bool:
        """Whether ``base_url`` can take the direct path (plain http, no proxy configured)."""
        return base_url.startswith("http://") and not proxies

    def _acquire(self) -> _Connection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return _Connection(self.host, self.port, timeout=self.timeout)

    def _release(self, conn: _Connection) -> None:
        with self._lock:
            if len(self._idle) < self.max_idle:
                self._idle.append(conn)
                return
        conn.close()

    def send(
        self, method: str, url: str, body: bytes | None, headers: dict[str, str]
    ) -> requests.Response:
        """Send one request; the answer as a ``requests.Response`` (whatever its status).

        Raises ``OSError``/``http.client.HTTPException`` when the connection fails (it is
        closed then); the caller falls back to the regular transport.
        """
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn = self._acquire()
        try:
            if self._cookies and "Cookie" not in headers:
                jar = "; ".join(f"{name}={value}" for name, value in self._cookies.items())
                headers = {**headers, "Cookie": jar}
            conn.request(method, target, body=body, headers=headers)
            answer = conn.getresponse()
            content = answer.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            raise
        self._keep_cookies(answer.headers.get_all("Set-Cookie") or ())
        if answer.will_close:
            conn.close()
        else:
            self._release(conn)
        return _response(method, url, headers, answer, content)

    def _keep_cookies(self, set_cookies: Iterable[str]) -> None:
        for header in set_cookies:
            name, _, value = header.split(";", 1)[0].strip().partition("=")
            with self._lock:
                if value.strip('"'):
                    self._cookies[name] = value
                else:  # cleared by the server
                    self._cookies.pop(name, None)

    def close(self) -> None:
        """Close the idle connections (like ``requests.Session.close``, later requests open
        new ones)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _response(
    method: str,
    url: str,
    request_headers: dict[str, str],
    answer: http.client.HTTPResponse,
    content: bytes,
) -> requests.Response:
    """The ``requests.Response`` globus-sdk's response and error classes read."""
    request = requests.PreparedRequest()
    request.method = method
    request.url = url
    request.headers = CaseInsensitiveDict(request_headers)
    response = requests.Response()
    response.status_code = answer.status
    response.reason = answer.reason
    response.headers = CaseInsensitiveDict(answer.getheaders())
    response.url = url
    response.encoding = "utf-8"
    response.request = request
    response._content = content
    return response
