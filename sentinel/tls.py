"""TLS contexts for Sentinel's edges, built once at start-up from config file paths.

    >>> context = client_context("alerting.webhooks[0]", ca_file="/etc/sentinel/ca.pem")
    >>> server = server_context("metrics.tls", "/etc/sentinel/tls.crt", "/etc/sentinel/tls.key")

Client contexts always verify the peer's certificate and host name (Python's defaults,
TLS 1.2 or newer); `ca_file` replaces the system CAs, for a private CA. A file that cannot
be read or parsed is a ConfigError naming the key, so a bad path stops start-up instead of
failing the first alert at 3 a.m.
"""

from __future__ import annotations

import ssl

from sentinel.errors import ConfigError


def client_context(key: str, ca_file: str | None = None, cert_file: str | None = None,
                   key_file: str | None = None, check_hostname: bool = True) -> ssl.SSLContext:
    """A verifying client context; `cert_file`/`key_file` add a client certificate (mTLS)."""
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{key}.ca_file", ca_file, f"a readable PEM CA bundle ({_why(exc)})") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # Turning the host name check off is for brokers addressed by IP with name-only
    # certificates; the certificate chain is still verified.
    context.check_hostname = check_hostname
    if cert_file is not None:
        try:
            context.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"{key}.cert_file", cert_file,
                              f"a readable PEM certificate matching key_file ({_why(exc)})") from exc
    return context


def server_context(key: str, cert_file: str, key_file: str) -> ssl.SSLContext:
    """A server context presenting `cert_file`; TLS 1.2 or newer."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{key}.cert_file", cert_file,
                          f"a readable PEM certificate matching key_file {key_file!r} "
                          f"({_why(exc)})") from exc
    return context


def _why(exc: BaseException) -> str:
    # strerror and the SSL reason, never file contents
    if isinstance(exc, ssl.SSLError):
        return exc.reason or exc.__class__.__name__
    return getattr(exc, "strerror", None) or exc.__class__.__name__
