"""Keep credentials out of everything a person or a log can read."""

from __future__ import annotations

import logging
import re
import traceback
from urllib.parse import parse_qsl, urlsplit, urlunsplit

REDACTED = "***"

# user:password@ or a lone user@ (often a token) inside any URL-looking text.
_USERINFO = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*)(?::(?P<pw>[^@/\s]*))?@"
)
# Query parameters that carry a credential (MongoDB, Redis, HTTP APIs), any case.
SECRET_PARAMS = (
    "password",
    "passwd",
    "pwd",
    "pass",
    "token",
    "access_token",
    "auth_token",
    "api_key",
    "apikey",
    "api-key",
    "key",
    "secret",
    "client_secret",
    "signature",
    "sig",
    "authmechanismproperties",
    "tlscertificatekeyfilepassword",
    "sslclientcertificatekeypassword",
)
_SECRET_PARAM = re.compile(
    r"(?P<name>[?&;](?:" + "|".join(re.escape(p) for p in SECRET_PARAMS) + r")=)[^&#\s]*",
    re.IGNORECASE,
)


def _userinfo(m: re.Match[str]) -> str:
    if m["pw"] is None:
        # No password: the user name itself may be the credential (https://TOKEN@host).
        return f"{m['scheme']}{REDACTED}@" if m["user"] else m[0]
    return f"{m['scheme']}{m['user']}:{REDACTED}@"


def redact_url(url: str | None) -> str:
    """Return `url` with its password (or lone user name) and secret query values as ***."""
    if not url:
        return ""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    if "@" in parts.netloc:
        user, host = parts.netloc.rsplit("@", 1)
        shown = f"{parts.username or ''}:{REDACTED}" if ":" in user else REDACTED
        parts = parts._replace(netloc=f"{shown}@{host}")
    return _SECRET_PARAM.sub(lambda m: m["name"] + REDACTED, urlunsplit(parts))


def url_secrets(url: str | None) -> list[str]:
    """Every credential value inside `url`: password, lone user name, secret query values."""
    if not url:
        return []
    try:
        parts = urlsplit(url)
        found = [parts.password or ""]
        if parts.password is None and "@" in parts.netloc:
            found.append(parts.username or "")
        wanted = {p.lower() for p in SECRET_PARAMS}
        for name, value in parse_qsl(parts.query):
            if name.lower() in wanted:
                found.append(value)
            if name.lower() == "authmechanismproperties":
                # KEY:value,KEY:value, e.g. AWS_SESSION_TOKEN:<token>: each value on its own.
                found += [prop.partition(":")[2] for prop in value.split(",")]
    except ValueError:
        return []
    return [s for s in found if s]


def redact_text(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Scrub URL credentials, secret query values and each known secret from free text."""
    out = _USERINFO.sub(_userinfo, text)
    out = _SECRET_PARAM.sub(lambda m: m["name"] + REDACTED, out)
    for secret in secrets:
        if secret and len(secret) >= 3:
            out = out.replace(secret, REDACTED)
    return out


def redacted_traceback(exc: BaseException, secrets: tuple[str, ...] = ()) -> str:
    """The traceback Python would print for `exc`, with every credential scrubbed."""
    return redact_text("".join(traceback.format_exception(exc)), secrets)


class RedactingFilter(logging.Filter):
    """Scrub credentials from every record before it is written: message, traceback, stack."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact_text(record.getMessage(), self.secrets)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            # Formatters print exc_text when it is set, so the raw exception never shows.
            record.exc_text = redacted_traceback(record.exc_info[1], self.secrets).rstrip("\n")
        elif record.exc_text:
            record.exc_text = redact_text(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info, self.secrets)
        return True
