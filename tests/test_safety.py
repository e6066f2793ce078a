import logging
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fruitlake import FruitlakeError
from fruitlake.redaction import RedactingFilter, redact, redact_tree
from fruitlake.safety import check_separate, private_temp_dir

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
    check_separate({"INPUT": "s3a://bucket/in", "OUTPUT": "s3a://bucket/out", "--from-run": "s3a://bucket/run"})


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


# ---- Redaction gaps (issue 12, class 6): a catalogue of secret shapes, then generated ones -------------------

@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("api_key=AbC123xyz", "AbC123xyz"),
        ("request failed: secret=s3cr3tvalue", "s3cr3tvalue"),
        ("client_secret=cl-9f8e7d", "cl-9f8e7d"),
        ("https://api.example.com/v1?apikey=K3Y0123", "K3Y0123"),
        ("my_token=tok_55aa", "tok_55aa"),
        ("x=1%20token=pctSECRET1&y=2", "pctSECRET1"),  # a percent-encoded neighbour
        ("name%3Dx%26token%3DencSECRET2", "encSECRET2"),  # an encoded separator
        ("s3a://AKIAEXAMPLE:p@ss@word@fruits/images", "ss@word"),  # `@` inside the password
        ("s3a://AKIAEXAMPLE:wJal/rXUt+nF@fruits/images", "rXUt+nF"),  # `/` inside the password
        ("https://ghp_0123456789abcdef@github.com/org/repo.git", "ghp_0123456789abcdef"),  # a token as user
        ('{"password": "two words"}', "two words"),
        ("fs.s3a.secret.key=hadoopSECRET", "hadoopSECRET"),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload", "eyJhbGciOiJIUzI1NiJ9"),
        ("password='p@ss, with comma'", "with comma"),
    ],
)
def test_every_secret_shape_in_the_catalogue_is_redacted(text, secret):
    assert secret not in redact(text)
    assert "***" in redact(text)


def test_the_values_of_secret_environment_variables_are_redacted_anywhere(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG")
    monkeypatch.setenv("FRUITLAKE_TEST_WEIGHTS_FILE_TOKEN_FILE", "/var/run/token")  # a path: kept
    text = "java.io.IOException: signature mismatch for wJalrXUtnFEMI/K7MDENG reading /var/run/token"
    assert redact(text) == "java.io.IOException: signature mismatch for *** reading /var/run/token"


@pytest.mark.parametrize(
    "text",
    ["file:/data/Pêche, jaune/a b.jpg", "http://[::1]:8080/x", "http://host:8080/a@b.jpg", "pca  2 tasks  k=5 (fit)",
     "featurize   6/6 images  13 tasks  0.8 images/s  done in 0:07", "s3a://fruits/date=2024-01-01/Kiwi/a.jpg"],
)
def test_ordinary_text_is_left_alone(text):
    assert redact(text) == text


# Secrets as people write them: URI-safe characters, `@`, `/`, `:` and `%` included; at least 8 long, so they
# cannot be found by chance in the surrounding text.
SECRET_CHARS = st.sampled_from(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~+=@/:%!$*(),;&"))
secrets = st.text(SECRET_CHARS, min_size=8, max_size=40).map(lambda s: "Q" + s + "Z")
names = st.sampled_from(["api_key", "apikey", "secret", "client_secret", "my_token", "password", "passwd",
                         "AWS_SECRET_ACCESS_KEY", "aws_session_token", "X-Amz-Signature", "fs.s3a.secret.key",
                         "access_key", "Token", "private_key"])
before = st.sampled_from(["", " ", "%20", "&", "?", "(", "'", "\t", "x=1&", "%26", "\n"])
separators = st.sampled_from(["=", ": ", " = ", "%3D", ":"])
schemes = st.sampled_from(["s3a", "s3", "https", "http", "hdfs", "ftp"])
hosts = st.from_regex(r"[a-z][a-z0-9.-]{0,20}", fullmatch=True)
tails = st.from_regex(r"(/[A-Za-z0-9._ -]{0,12}){0,3}", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(name=names, secret=secrets, lead=before, sep=separators, trail=st.sampled_from(["", " ", "\n", " and more"]))
def test_named_secrets_are_redacted_whatever_surrounds_them(name, secret, lead, sep, trail):
    text = f"context{lead}{name}{sep}{secret.replace(' ', '')}{trail}"
    assert secret not in redact(text), redact(text)


@settings(max_examples=300, deadline=None)
@given(scheme=schemes, user=st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True), secret=secrets, host=hosts,
       tail=tails, quote=st.sampled_from(["", "'", '"']))
def test_passwords_in_uris_are_redacted_whatever_they_hold(scheme, user, secret, host, tail, quote):
    uri = f"{scheme}://{user}:{secret}@{host}{tail}"
    cleaned = redact(f"failed to read {quote}{uri}{quote}: 403 Forbidden")
    assert secret not in cleaned and f"{scheme}://{user}:***@" in cleaned, cleaned
    assert cleaned.endswith(f"{quote}: 403 Forbidden")


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200), secret=secrets, name=names)
def test_redaction_never_grows_a_secret_back_and_is_idempotent(text, secret, name):
    once = redact(f"{text} {name}={secret} {text}")
    assert secret not in once and redact(once) == once


def test_a_log_record_with_a_java_stack_trace_is_redacted_line_by_line(caplog):
    caplog.handler.addFilter(RedactingFilter())
    trace = ("An error occurred while calling o861.parquet.\n: java.io.IOException: s3a://AKIA:p@ss@b/x\n"
             "\tat org.apache.hadoop.fs.s3a.S3AFileSystem.open(S3AFileSystem.java:1)\n"
             "Caused by: java.io.IOException: my_token=tok_SECRET9")
    logging.getLogger("fruitlake.test-redaction").error("%s", trace)
    assert "ss@b" not in caplog.text and "tok_SECRET9" not in caplog.text


@pytest.mark.parametrize("name", ["out[1]", "out*", "out?", "out{a,b}", "out\\x", "a]b"])
def test_output_and_model_names_spark_would_glob_are_refused(name):
    with pytest.raises(FruitlakeError, match=r"OUTPUT .* contains .*glob pattern.*rename the folder"):
        check_separate({"INPUT": "file:/data/in", "OUTPUT": f"file:/data/{name}"})
    with pytest.raises(FruitlakeError, match=r"--from-run .* glob pattern"):
        check_separate({"INPUT": "file:/data/in", "OUTPUT": "file:/data/out", "--from-run": f"s3a://b/{name}"})
    check_separate({"INPUT": f"file:/data/{name}", "OUTPUT": "file:/data/out"})  # INPUT is escaped where read


def test_escaped_paths_match_only_themselves(tmp_path, spark):
    """Hadoop's globber on escape_glob(path) finds exactly that path, never a sibling the pattern matches."""
    from fruitlake.safety import escape_glob

    names = ["in[1]", "in1", "in*", "in{1,2}", "in\\x", "inx", "in?"]
    for name in names:
        (tmp_path / name).mkdir()
    jvm = spark.sparkContext._jvm
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    for name in names:
        pattern = jvm.org.apache.hadoop.fs.Path(escape_glob(str(tmp_path / name)))
        found = [status.getPath().toUri().getPath() for status in pattern.getFileSystem(conf).globStatus(pattern)]
        assert found == [str(tmp_path / name)]
