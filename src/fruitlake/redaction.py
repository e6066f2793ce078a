"""Keep secrets out of logs, manifests and messages: `redact` for text, `redact_tree` for documents, and a
logging filter for whatever a library logs. Imports nothing of fruitlake, so everything may use it."""

from __future__ import annotations

import logging
import os
import re
from typing import Any, TypeVar, overload

REDACTED = "***"
# A URI and what follows its scheme, up to whitespace, a quote or an angle bracket (the end of a URI in text).
_URI = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<rest>[^\s'\"<>`]*)")
# Query strings of URIs (signed URLs: X-Amz-Signature, X-Amz-Credential...): keep the names, drop the values.
_QUERY = re.compile(r"(?P<uri>[A-Za-z][A-Za-z0-9+.-]*://[^\s?#'\"]*)\?(?P<query>[^\s#'\"]*[^\s#'\":.,;)\]])")
# name=value and name: value pairs whose name holds a secret word, anywhere in a word (`my_token`, `api_key`,
# `client_secret`, `fs.s3a.secret.key`) and after any neighbour (`%20token=`, `&apikey=`, `"password": "..."`).
# Separators may be percent-encoded (%3D, %3A). A quoted value is dropped up to its closing quote; an unquoted one
# up to the next whitespace, quote or angle bracket (a password holding `@`, `,` or `&` is dropped whole), except
# the punctuation that ends a sentence (`:.,;)]` before a space): `token=abc: 403` keeps its `: 403`.
_SECRET_NAME = (r"[A-Za-z0-9_.-]*(?:secret|token|passw(?:or)?d|api[_-]?key|access[_-]?key|private[_-]?key|"
                r"signature)[A-Za-z0-9_.-]*")
_SECRET_WORDS = re.compile(
    rf"(?i)(?P<key>{_SECRET_NAME}[\"']?\s*(?:=|:(?!//)|%3[dDaA])\s*)"
    r"(?P<value>\*\*\*(?=[&\s'\"<>`]|$)|\"[^\"\n]*\"?|'[^'\n]*'?|[^\s'\"<>`]*[^\s'\"<>`:.,;)\]])"
)
# HTTP authorisation headers: `Authorization: Bearer <token>`, `Basic <base64>`.
_AUTH_SCHEME = re.compile(r"(?i)(?P<key>\b(?:bearer|basic)\s+)(?P<value>[A-Za-z0-9._~+/=-]{8,})")
# Environment variables whose values are secrets wherever they turn up, even with no name beside them.
# (not names of files, folders or URLs that hold one: AWS_WEB_IDENTITY_TOKEN_FILE is a path, not a secret).
_SECRET_ENV = re.compile(rf"(?i)^(?!.*_(?:FILE|PATH|DIR|HOME|URL|URI)$){_SECRET_NAME}$")
_MIN_ENV_SECRET = 8  # shorter values (`1`, `true`) would blank out ordinary text


def _redact_userinfo(match: re.Match[str]) -> str:
    """`scheme://user:password@host/...` -> `scheme://user:***@host/...`; `scheme://token@host` -> `***@host`.

    The userinfo ends at the last `@` of the authority, so a password holding `@` goes whole. When the authority
    looks like `user:secret` (not `host:port`) and an `@` follows later, the secret held a `/`, `?` or `#` (an AWS
    secret key often holds `/`): everything up to the last `@` of the URI is userinfo.
    """
    scheme, rest = match.group("scheme"), match.group("rest")
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "@" in authority:
        end = authority.rindex("@")
    else:
        user, colon, port = authority.partition(":")
        if not colon or port.isdigit() or authority.startswith("[") or "@" not in rest:
            return match.group(0)
        end = rest.rindex("@")
    userinfo = rest[:end]
    user, colon, _ = userinfo.partition(":")
    shown = f"{user}:{REDACTED}" if colon and user else REDACTED
    return f"{scheme}{shown}{rest[end:]}"


def _redact_query(match: re.Match[str]) -> str:
    names = [part.split("=", 1)[0] for part in match.group("query").split("&") if part]
    return match.group("uri") + "?" + "&".join(f"{name}={REDACTED}" for name in names)


def _redact_value(match: re.Match[str]) -> str:
    value = match.group("value")
    quote = value[0] if value[0] in "\"'" else ""
    return match.group("key") + quote + REDACTED + (quote if quote and value.endswith(quote) and len(value) > 1
                                                    else "")


def _environment_secrets() -> list[str]:
    values = {value for name, value in os.environ.items()
              if len(value) >= _MIN_ENV_SECRET and _SECRET_ENV.match(name)}
    return sorted(values, key=len, reverse=True)


def redact(text: object) -> str:
    """`text` with secrets replaced by ***: passwords and tokens in URIs, query-string values, name=secret pairs,
    `Bearer`/`Basic` credentials, and the values of secret environment variables (`AWS_SECRET_ACCESS_KEY`...)."""
    if text is None:
        return ""
    out = str(text)
    for secret in _environment_secrets():
        out = out.replace(secret, REDACTED)
    out = _URI.sub(_redact_userinfo, out)
    out = _QUERY.sub(_redact_query, out)
    out = _AUTH_SCHEME.sub(lambda m: m.group("key") + REDACTED, out)
    return _SECRET_WORDS.sub(_redact_value, out)


Tree = TypeVar("Tree")


@overload
def redact_tree(value: tuple[Any, ...]) -> list[Any]: ...
@overload
def redact_tree(value: Tree) -> Tree: ...


def redact_tree(value: object) -> object:
    """A JSON-like document with every string, keys included, redacted (the manifest, report.json); tuples come
    back as lists, as JSON holds them."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(key) if isinstance(key, str) else key: redact_tree(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_tree(item) for item in value]
    return value


class RedactingFilter(logging.Filter):
    """Attach to a handler: whatever a library logs (a Spark error naming an s3a:// URI) is redacted first."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if record.exc_info and record.exc_info[1] is not None:
            cleaned += "\n" + redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info, record.exc_text = None, None
        record.msg, record.args = cleaned, None
        return True
