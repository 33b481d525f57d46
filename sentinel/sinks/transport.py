"""The HTTP edge: POST a body, get the status and the response headers. Stdlib only.

    >>> status, headers = http_post("http://127.0.0.1:9000/alerts", b"{}",
    ...                             {"Content-Type": "application/json"}, timeout_seconds=5.0)

Any `Post` callable will do for the Notifier; this is the real one. Redirects are never
followed (a 3xx comes back as it is, and the Notifier rejects it): re-POSTing an alert, with
its signature and credentials, to a URL nobody configured is worse than not delivering it.
https:// always verifies the certificate and the host name, against the system CAs or, per
URL, a context made from the sink's `ca_file` (`HttpTransport`).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from http.client import HTTPConnection, HTTPException, HTTPSConnection
from urllib.parse import urlsplit

from sentinel.errors import TransportError

# post(url, body, headers, timeout_seconds) -> (status, response headers); raises
# TransportError when no HTTP response came back.
Post = Callable[[str, bytes, Mapping[str, str], float], tuple[int, Mapping[str, str]]]

_MAX_RESPONSE_BYTES = 64 * 1024  # receivers' bodies are not used; read a little, politely



class HttpTransport:
    """A `Post` with a TLS context per URL (a sink's own CA); other https URLs use the system CAs.

    >>> post = HttpTransport({"https://hooks.internal/alerts": client_context(...)})
    """

    def __init__(self, contexts: Mapping[str, ssl.SSLContext] | None = None) -> None:
        self._contexts = dict(contexts or {})

    def __call__(self, url: str, body: bytes, headers: Mapping[str, str], timeout_seconds: float
                 ) -> tuple[int, dict[str, str]]:
        return http_post(url, body, headers, timeout_seconds, self._contexts.get(url))


def http_post(url: str, body: bytes, headers: Mapping[str, str], timeout_seconds: float,
              context: ssl.SSLContext | None = None) -> tuple[int, dict[str, str]]:
    """POST `body`; the response headers come back with lower-case names.

    `timeout_seconds` bounds connecting and each wait for the receiver's bytes. `context`
    verifies an https:// receiver (default: the system CAs, host name checked).
    """
    status, response_headers, _ = _request("POST", url, body, headers, timeout_seconds, context,
                                           _MAX_RESPONSE_BYTES)
    return status, response_headers


def http_get(url: str, headers: Mapping[str, str], timeout_seconds: float,
             context: ssl.SSLContext | None = None, max_bytes: int = 256 << 20
             ) -> tuple[int, dict[str, str], bytes]:
    """GET `url` (a query API such as Prometheus's): status, lower-case headers and the body
    (at most `max_bytes`); TransportError as for `http_post`."""
    return _request("GET", url, None, headers, timeout_seconds, context, max_bytes)


def _request(method: str, url: str, body: bytes | None, headers: Mapping[str, str],
             timeout_seconds: float, context: ssl.SSLContext | None, max_bytes: int
             ) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = {**headers, "User-Agent": "sentinel"}
    connection = None
    try:
        if parts.scheme == "https":
            connection = HTTPSConnection(parts.hostname or "", parts.port, timeout=timeout_seconds,
                                         context=context or ssl.create_default_context())
        else:
            connection = HTTPConnection(parts.hostname or "", parts.port, timeout=timeout_seconds)
        connection.request(method, target, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read(max_bytes)
        return (response.status, {name.lower(): value for name, value in response.getheaders()},
                data)
    except (OSError, HTTPException, ValueError) as exc:  # socket.timeout is an OSError
        where = f"{parts.hostname}:{parts.port or ('443' if parts.scheme == 'https' else '80')}"
        raise TransportError(f"{method} to {where} failed: {exc!r}") from exc
    finally:
        if connection is not None:
            connection.close()
