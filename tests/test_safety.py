import logging
import os
import stat
from pathlib import Path

import pytest

from fruitlake import FruitlakeError
from fruitlake.safety import RedactingFilter, check_separate, private_temp_dir, redact, redact_tree

SIGNED = (
    "https://fruits.s3.amazonaws.com/a.jpg?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIAEXAMPLE%2F20250101%2Fus-east-1&X-Amz-Signature=deadbeefcafe&X-Amz-Expires=3600"
)


@pytest.mark.parametrize(
    ("text", "secrets", "kept"),
    [
        ("s3a://AKIAEXAMPLE:wJalrXUtnF@fruits/images", ["wJalrXUtnF"], "s3a://AKIAEXAMPLE:***@fruits/images"),
        ("https://alice:hunter2@host:8443/x", ["hunter2"], "https://alice:***@host:8443/x"),
        (SIGNED, ["deadbeefcafe", "AKIAEXAMPLE"], "X-Amz-Signature=***"),
        (f"failed to read {SIGNED}: 403", ["deadbeefcafe"], ": 403"),
        ("key: aws_secret_access_key=wJalrXUtnF", ["wJalrXUtnF"], "aws_secret_access_key=***"),
        ("file:/data/Pêche, jaune/a b.jpg", [], "file:/data/Pêche, jaune/a b.jpg"),
        ("s3a://fruits/images/Training", [], "s3a://fruits/images/Training"),
    ],
)
def test_secrets_in_uris_and_messages_are_redacted(text, secrets, kept):
    cleaned = redact(text)
    assert not [secret for secret in secrets if secret in cleaned]
    assert kept in cleaned


def test_manifest_documents_are_redacted_all_the_way_down():
    document = {"input": "s3a://k:secret1@b/in", "config": {"weights": SIGNED, "k": 5}, "list": ["x:y", 3]}
    cleaned = redact_tree(document)
    assert "secret1" not in str(cleaned) and "deadbeefcafe" not in str(cleaned)
    assert cleaned["config"]["k"] == 5 and cleaned["list"] == ["x:y", 3]


def test_log_records_are_redacted_before_any_handler_writes_them(caplog):
    logger = logging.getLogger("fruitlake.test-redaction")
    caplog.handler.addFilter(RedactingFilter())
    try:
        raise OSError(f"403 on {SIGNED}")
    except OSError:
        logger.error("reading %s failed", "s3a://key:topsecret@bucket/x", exc_info=True)
    text = caplog.text
    assert "topsecret" not in text and "deadbeefcafe" not in text
    assert "s3a://key:***@bucket/x" in text and "OSError" in text


@pytest.mark.parametrize(
    ("input_", "output", "message"),
    [
        ("in", "in", "INPUT .* is the same folder as OUTPUT"),
        ("in", "in/results", "OUTPUT .* is inside INPUT"),
        ("data/in", "data", "INPUT .* is inside OUTPUT"),
        ("in", "link-to-in/out", "OUTPUT .* is inside INPUT"),
    ],
)
def test_output_must_be_separate_from_input(tmp_path, input_, output, message):
    (tmp_path / "in").mkdir()
    (tmp_path / "link-to-in").symlink_to(tmp_path / "in")
    locations = {"INPUT": f"file:{tmp_path / input_}", "OUTPUT": f"file:{tmp_path / output}"}
    with pytest.raises(FruitlakeError, match=message):
        check_separate(locations)


def test_siblings_sharing_a_prefix_are_separate(tmp_path):
    check_separate({"INPUT": f"file:{tmp_path}/images", "OUTPUT": f"file:{tmp_path}/images-out"})
    check_separate({"INPUT": "s3a://bucket/in", "OUTPUT": "s3a://bucket/out", "--model": "s3a://bucket/run"})


def test_temporary_folders_are_private():
    path = Path(private_temp_dir())
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
    finally:
        path.rmdir()


def test_spark_writes_its_temporary_files_in_a_private_folder(spark):
    """Shuffle blocks, cached features and the broadcast weights (pyspark temp files) all live below it."""
    local_dir = Path(spark.conf.get("spark.local.dir"))
    assert stat.S_IMODE(local_dir.stat().st_mode) == 0o700
    assert local_dir.stat().st_uid == os.getuid()
    assert Path(spark.sparkContext._temp_dir).is_relative_to(local_dir)


def test_fruitlake_errors_are_redacted_where_they_are_made():
    from fruitlake import FruitlakeError

    error = FruitlakeError("INPUT 's3a://AKIA:wJalrXUtnF@bucket/x' does not exist")
    assert "wJalrXUtnF" not in str(error) and "s3a://AKIA:***@bucket/x" in str(error)
