import pytest

from fruitlake import fs


@pytest.mark.parametrize(("uri", "path"), [
    ("file:///a/b", "/a/b"),
    ("file:/a/b", "/a/b"),
    ("/a/b", "/a/b"),
    ("a/b", "a/b"),  # a relative plain path stays relative
    ("file:/a/b%20c", "/a/b%20c"),  # as Hadoop prints it: not percent-encoded, so %20 is three characters
    ("file:/a/b c/d", "/a/b c/d"),
    ("file:/a/12:30/x.jpg", "/a/12:30/x.jpg"),
    ("12:30/x.jpg", "12:30/x.jpg"),  # a colon in a plain path is part of a local name, not a scheme
    ("file:/a/#1/b?c.jpg", "/a/#1/b?c.jpg"),  # no fragment or query in a local name
    ("s3a://x", None),
    ("s3a://bucket/a/b", None),
    ("s3://bucket/a", None),
])
def test_local_path(uri, path):
    assert fs.local_path(uri) == path


@pytest.mark.parametrize("name", ["a b", "12:30", "100%", "%41", "#1", "Pêche, jaune"])
def test_local_path_reads_back_what_hadoop_qualifies(spark, tmp_path, name):
    path = str(tmp_path / name / "x.jpg")
    qualified = fs.qualify(spark, path)
    assert qualified.startswith("file:")
    assert fs.local_path(qualified) == path
