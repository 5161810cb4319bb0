"""Keep credentials out of everything a person or a log can read."""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit, urlunsplit

REDACTED = "***"

# user:password@ inside any URL-looking text, e.g. in a driver's error message.
_USERINFO = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@"
)


def redact_url(url: str | None) -> str:
    """Return `url` with any password replaced by ***; None becomes ''."""
    if not url:
        return ""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:{REDACTED}@{host}"))


def redact_text(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Scrub URL passwords and each known secret value from free text."""
    out = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", text)
    for secret in secrets:
        if secret and len(secret) >= 3:
            out = out.replace(secret, REDACTED)
    return out


class RedactingFilter(logging.Filter):
    """Scrub URL passwords and known secrets from every record before it is written."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact_text(record.getMessage(), self.secrets)
        record.args = None
        return True
