"""The EMR step's Python side: fetch s3:// weights to a local file on the driver, then `fruitlake run`.

Keras loads weights only from a local file; the instance role can read the project bucket, so a user who
uploaded the .h5 there passes `--weights s3://BUCKET/weights/x.h5` and the driver downloads it once. The
executors never read it: they get the broadcast network from the driver.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from fruitlake import FruitlakeError

log = logging.getLogger(__name__)

Download = Callable[[str, str, str], None]  # (bucket, key, local path)


def split_s3_uri(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not uri.startswith("s3://") or not bucket or not key or key.endswith("/"):
        raise FruitlakeError(f"{uri!r} is not an s3://BUCKET/KEY URI of a file")
    return bucket, key


def weights_argument(argv: list[str]) -> tuple[int, str] | None:
    """(index, value) of --weights in `run ...` arguments, given as `--weights X` or as `--weights=X`."""
    for index, token in enumerate(argv):
        if token == "--weights" and index + 1 < len(argv):
            return index + 1, argv[index + 1]
        if token.startswith("--weights="):
            return index, token.split("=", 1)[1]
    return None


def localize_weights(argv: list[str], directory: str, download: Download) -> list[str]:
    """The same arguments with an s3:// --weights replaced by the path of its local copy."""
    found = weights_argument(argv)
    if found is None or not found[1].startswith("s3://"):
        return list(argv)
    index, uri = found
    bucket, key = split_s3_uri(uri)
    local = str(Path(directory) / Path(key).name)
    log.info("downloading %s to %s", uri, local)
    download(bucket, key, local)
    out = list(argv)
    out[index] = local if out[index] == uri else f"--weights={local}"
    return out


def s3_download(bucket: str, key: str, path: str) -> None:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        boto3.client("s3").download_file(bucket, key, path)
    except (BotoCoreError, ClientError) as exc:
        raise FruitlakeError(f"cannot download the weights s3://{bucket}/{key}: {exc}") from None


def main(argv: list[str], download: Download = s3_download) -> int:
    from fruitlake import cli

    with tempfile.TemporaryDirectory(prefix="fruitlake-weights-") as directory:
        try:
            local_argv = localize_weights(argv, directory, download)
        except FruitlakeError as exc:
            print(f"fruitlake: error: {exc}", file=sys.stderr)
            return 2
        return cli.main(local_argv)
