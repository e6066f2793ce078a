"""Keep writes inside OUTPUT and reads out of it; keep temp files private."""

from __future__ import annotations

import os
import tempfile

from fruitlake import FruitlakeError
from fruitlake.fs import local_path
from fruitlake.redaction import redact

# What Hadoop's globber (and so every Spark reader and Spark ML's loader) treats as a pattern in a path.
GLOB_CHARACTERS = "*?[]{}\\"


def escape_glob(path: str) -> str:
    """`path` as a Hadoop glob that matches only itself: each pattern character behind a backslash."""
    return "".join("\\" + char if char in GLOB_CHARACTERS else char for char in path)


def resolved(qualified_uri: str) -> str:
    """One spelling per location: a qualified URI without a trailing slash, local paths with every symlink
    resolved, as Hadoop prints a qualified local path (`file:/x`). (Hadoop prints qualified paths decoded: `%41`
    in a name is three characters, not `A`.)"""
    local = local_path(qualified_uri)
    if local is not None:
        return "file:" + os.path.realpath(local)
    return qualified_uri.rstrip("/")


def _comparable(qualified_uri: str) -> str:
    """A qualified URI as a comparable string with a trailing slash."""
    return resolved(qualified_uri) + "/"


def _refuse_patterns(locations: dict[str, str]) -> None:
    """INPUT is listed and read by fruitlake itself (listing.py, fetch.py), never as a pattern; OUTPUT and
    --from-run are read back by Spark's readers and Spark ML's loader, which take every location as a pattern, so
    a name with pattern characters is refused."""
    for role, uri in locations.items():
        found = sorted(set(uri) & set(GLOB_CHARACTERS))
        if role != "INPUT" and found:
            raise FruitlakeError(
                f"{role} {redact(uri)!r} contains {' '.join(found)}: Spark reads this location back as a glob "
                "pattern, which would read other folders or fail after writing; rename the folder (or choose "
                "another) without any of * ? [ ] { } \\"
            )


def check_separate(locations: dict[str, str]) -> None:
    """Refuse locations that are equal or nested (OUTPUT inside INPUT would be read back as images;
    INPUT inside OUTPUT would be deleted by --mode overwrite), and OUTPUT or --from-run names Spark would take
    for glob patterns. Every location is a literal path. `locations`: role -> qualified URI."""
    _refuse_patterns(locations)
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
