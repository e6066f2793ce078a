"""Keep secrets out of logs, manifests and messages; keep writes inside OUTPUT; keep temp files private."""

from __future__ import annotations

import logging
import os
import re
import tempfile
from urllib.parse import unquote

REDACTED = "***"
# user:password@ in any scheme://authority; the password is dropped, the user name kept (it is no secret).
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/@\s:?#]*)(?::[^/@\s]*)?@")
# Query strings of URIs (signed URLs: X-Amz-Signature, X-Amz-Credential...): keep the names, drop the values.
_QUERY = re.compile(r"(?P<uri>[A-Za-z][A-Za-z0-9+.-]*://[^\s?#'\"]*)\?(?P<query>[^\s#'\"]*[^\s#'\":.,;)\]])")
_SECRET_WORDS = re.compile(
    r"(?i)(?P<key>\b(?:aws_secret_access_key|aws_session_token|secret[_-]?key|access[_-]?key|"
    r"session[_-]?token|password|passwd|token)\b\s*[=:]\s*)(?P<value>[^\s,;&'\"]+)"
)


def _redact_query(match: re.Match) -> str:
    names = [part.split("=", 1)[0] for part in match.group("query").split("&") if part]
    return match.group("uri") + "?" + "&".join(f"{name}={REDACTED}" for name in names)


def redact(text: object) -> str:
    """`text` with passwords in URIs, query-string values and key=secret pairs replaced by ***."""
    if text is None:
        return ""
    out = _USERINFO.sub(lambda m: f"{m.group('scheme')}{m.group('user') or REDACTED}:{REDACTED}@", str(text))
    out = _QUERY.sub(_redact_query, out)
    return _SECRET_WORDS.sub(lambda m: m.group("key") + REDACTED, out)


def redact_tree(value):
    """A JSON-like document with every string redacted (for the manifest)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redact_tree(item) for key, item in value.items()}
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


def _comparable(qualified_uri: str) -> str:
    """A qualified URI as a comparable string with a trailing slash; local paths with symlinks resolved."""
    text = qualified_uri
    if text.startswith("file:"):
        local = unquote(re.sub(r"^file:(//)?", "", text))
        text = "file:" + os.path.realpath(local)
    return text.rstrip("/") + "/"


def check_separate(locations: dict[str, str]) -> None:
    """Refuse locations that are equal or nested (OUTPUT inside INPUT would be read back as images;
    INPUT inside OUTPUT would be deleted by --mode overwrite). `locations`: role -> qualified URI."""
    from fruitlake import FruitlakeError

    items = [(role, _comparable(uri), uri) for role, uri in locations.items()]
    for index, (role, mine, uri) in enumerate(items):
        for other_role, theirs, other_uri in items[index + 1 :]:
            if mine == theirs:
                relation = "is the same folder as"
            elif mine.startswith(theirs):
                relation = "is inside"
            elif theirs.startswith(mine):
                relation, role, uri, other_role, other_uri = "is inside", other_role, other_uri, role, uri
            else:
                continue
            raise FruitlakeError(
                f"{role} {redact(uri)!r} {relation} {other_role} {redact(other_uri)!r}: "
                "results are written only under OUTPUT, which must be separate from the images it reads"
            )


def private_temp_dir(prefix: str = "fruitlake-") -> str:
    """A fresh directory only this user can enter (0o700), for Spark's shuffle, cache and broadcast files."""
    path = tempfile.mkdtemp(prefix=prefix)
    os.chmod(path, 0o700)
    return path
