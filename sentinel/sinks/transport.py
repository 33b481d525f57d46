"""The HTTP edge: POST a body, get the status and the response headers. Stdlib only.

    >>> status, headers = http_post("http://127.0.0.1:9000/alerts", b"{}",
    ...                             {"Content-Type": "application/json"}, timeout_seconds=5.0)

Any `Post` callable will do for the Notifier; this is the real one. Redirects are not
followed: re-POSTing an alert to a URL nobody configured is worse than rejecting it.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from http.client import HTTPConnection, HTTPException, HTTPSConnection
from urllib.parse import unquote, urlsplit

from sentinel.errors import SentinelError

# post(url, body, headers, timeout_seconds) -> (status, response headers); raises
# TransportError when no HTTP response came back.
Post = Callable[[str, bytes, Mapping[str, str], float], tuple[int, Mapping[str, str]]]

_MAX_RESPONSE_BYTES = 64 * 1024  # receivers' bodies are not used; read a little, politely


class TransportError(SentinelError):
    """No HTTP response: connection refused or reset, timed out, TLS failure."""


def http_post(url: str, body: bytes, headers: Mapping[str, str], timeout_seconds: float
              ) -> tuple[int, dict[str, str]]:
    """POST `body`; the response headers come back with lower-case names.

    `timeout_seconds` bounds connecting and each wait for the receiver's bytes.
    """
    parts = urlsplit(url)
    connection_type = HTTPSConnection if parts.scheme == "https" else HTTPConnection
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = {**headers, "User-Agent": "sentinel"}
    if parts.username is not None:  # http://user:password@host/ as Basic auth
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
    connection = None
    try:
        connection = connection_type(parts.hostname or "", parts.port, timeout=timeout_seconds)
        connection.request("POST", target, body=body, headers=headers)
        response = connection.getresponse()
        response.read(_MAX_RESPONSE_BYTES)
        return response.status, {name.lower(): value for name, value in response.getheaders()}
    except (OSError, HTTPException, ValueError) as exc:  # socket.timeout is an OSError
        where = f"{parts.hostname}:{parts.port or ('443' if parts.scheme == 'https' else '80')}"
        raise TransportError(f"POST to {where} failed: {exc!r}") from exc
    finally:
        if connection is not None:
            connection.close()
