"""S3: the connector settings (no Spark), then whole runs against an S3 API server on loopback (moto)."""

import io
import sys

import pyarrow.parquet as pq
import pytest
from helpers import S3_BUCKET, S3_SECRET, explain, run, run_process

from fruitlake import FruitlakeError, s3
from fruitlake.config import RunConfig
from fruitlake.settings import Settings

# ---- settings: pure functions of the environment ----------------------------------------------------------


def test_only_s3_uris_need_the_connector(monkeypatch):
    monkeypatch.setattr(s3, "EMR_MARKERS", ())
    assert s3.uses_s3(["s3a://bucket/in", "/tmp/out"]) and s3.uses_s3(["data", "S3://bucket/out"])
    assert not s3.uses_s3(["data/sample", "file:/tmp/out", "hdfs:///x"])
    assert s3.session_conf(["data/sample", "/tmp/out"], {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}) == {}


def test_a_local_endpoint_gives_path_style_http_and_the_region():
    environ = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_DEFAULT_REGION": "eu-west-3"}
    settings = s3.hadoop_settings(environ)
    assert settings == {
        "fs.s3a.aws.credentials.provider": "com.amazonaws.auth.DefaultAWSCredentialsProviderChain",
        "fs.s3a.endpoint": "http://127.0.0.1:9000",
        "fs.s3a.path.style.access": "true",
        "fs.s3a.connection.ssl.enabled": "false",
        "fs.s3a.endpoint.region": "eu-west-3",
    }


def test_the_s3_specific_endpoint_and_aws_region_win():
    settings = s3.hadoop_settings({
        "AWS_ENDPOINT_URL": "http://127.0.0.1:1", "AWS_ENDPOINT_URL_S3": "https://s3.example.test",
        "AWS_REGION": "us-west-2", "AWS_DEFAULT_REGION": "eu-west-3",
    })
    assert settings["fs.s3a.endpoint"] == "https://s3.example.test"
    assert "fs.s3a.connection.ssl.enabled" not in settings  # https keeps S3A's TLS default
    assert settings["fs.s3a.endpoint.region"] == "us-west-2"
    assert set(s3.hadoop_settings({})) == {"fs.s3a.aws.credentials.provider"}  # real AWS: nothing to override


def test_credentials_never_enter_the_spark_conf(monkeypatch, tmp_path):
    monkeypatch.setattr(s3, "EMR_MARKERS", ())
    (tmp_path / "hadoop-aws-3.3.1.jar").touch()
    environ = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": S3_SECRET,
               "AWS_SESSION_TOKEN": "tok3n", "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
               "FRUITLAKE_S3A_JARS": str(tmp_path)}
    conf = s3.session_conf(["s3a://bucket/in"], environ)
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:9"
    text = repr(conf)
    assert "AKIDEXAMPLE" not in text and S3_SECRET not in text and "tok3n" not in text
    assert not any("key" in name or "secret" in name or "token" in name for name in conf)


def test_jars_come_from_the_offline_folder_or_from_maven(tmp_path):
    jars = tmp_path / "jars"
    jars.mkdir()
    (jars / "hadoop-aws-3.3.1.jar").touch()
    (jars / "aws-java-sdk-bundle-1.11.901.jar").touch()
    (jars / "README").touch()
    offline = s3.connector_jars(Settings(s3a_jars=str(jars)))
    sdk, hadoop_aws = jars / "aws-java-sdk-bundle-1.11.901.jar", jars / "hadoop-aws-3.3.1.jar"
    assert offline == {"spark.jars": f"{sdk},{hadoop_aws}"}
    spark_home = tmp_path / "spark"
    (spark_home / "jars").mkdir(parents=True)
    maven = {"spark.jars.packages": "org.apache.hadoop:hadoop-aws:3.3.4"}
    assert s3.connector_jars(Settings(), str(spark_home)) == maven
    (spark_home / "jars" / "hadoop-aws-3.3.4.jar").touch()
    assert s3.connector_jars(Settings(), str(spark_home)) == {}  # already on Spark's classpath


def test_an_offline_folder_without_hadoop_aws_fails_before_spark_starts(tmp_path):
    (tmp_path / "aws-java-sdk-bundle-1.11.901.jar").touch()
    with pytest.raises(FruitlakeError, match=r"FRUITLAKE_S3A_JARS=.* holds no hadoop-aws-\*\.jar"):
        s3.connector_jars(Settings(s3a_jars=str(tmp_path)))


def test_on_emr_s3_is_left_to_emrfs(monkeypatch, tmp_path):
    marker = tmp_path / "job-flow.json"
    marker.write_text("{}")
    monkeypatch.setattr(s3, "EMR_MARKERS", (str(marker),))
    assert s3.on_emr()
    assert s3.session_conf(["s3://bucket/in", "s3://bucket/out"], {"AWS_REGION": "us-east-1"}) == {}


def test_a_given_session_without_the_connector_is_refused(spark, tmp_path, weights_path, monkeypatch):
    monkeypatch.setattr(s3, "EMR_MARKERS", ())
    with pytest.raises(FruitlakeError, match=r"cannot open s3a:// .*hadoop-aws"):
        run(RunConfig("s3a://fruits/images", str(tmp_path / "out"), k=2, weights=weights_path), spark=spark)
    assert not (tmp_path / "out").exists()


# ---- whole runs: `python -m fruitlake run` against the loopback S3 server ---------------------------------
# (s3:// served by S3A: test_cluster.py's spark-submit run, the shape of an EMR step, reads and writes s3://.)


def fruitlake_run(env, *args: str):
    done = run_process([sys.executable, "-m", "fruitlake", "-v", "run", *args, "--batch-size", "8"],
                       {**env, "FRUITLAKE_MASTER": "local[2]", "FRUITLAKE_SPARK_LOG_LEVEL": "INFO"})
    assert done.returncode == 0, explain(done)
    return done


DOUBLE_SLASH, ARCHIVED = "Training/Kiwi//double-slash.jpg", "Training/Kiwi/archived.jpg"
SINGLE_SLASH = DOUBLE_SLASH.replace("//", "/")


@pytest.fixture(scope="module")
def s3_mixed(s3_bucket, s3_images) -> str:
    """The sample images plus a key with an empty path segment beside the same name without it (Hadoop named both
    `Kiwi/double-slash.jpg`: one was never read) and an object in the GLACIER class (GET answers 403)."""
    client, images = s3_bucket.client, s3_bucket.keys(f"{s3_images}/Training/Kiwi/")
    for key in s3_bucket.keys(f"{s3_images}/"):
        client.copy_object(Bucket=S3_BUCKET, Key=f"mixed/{key.split('/', 1)[1]}",
                           CopySource={"Bucket": S3_BUCKET, "Key": key})
    image = images[0]
    client.copy_object(Bucket=S3_BUCKET, Key=f"mixed/{DOUBLE_SLASH}", CopySource={"Bucket": S3_BUCKET, "Key": image})
    client.copy_object(Bucket=S3_BUCKET, Key=f"mixed/{SINGLE_SLASH}",
                       CopySource={"Bucket": S3_BUCKET, "Key": images[1]})
    client.put_object(Bucket=S3_BUCKET, Key=f"mixed/{ARCHIVED}", Body=s3_bucket.read(image), StorageClass="GLACIER")
    return "mixed"


@pytest.fixture(scope="module")
def s3a_run(s3_env, s3_mixed):
    """s3a:// in, s3a:// out, with Spark and fruitlake logging at INFO (to look for leaked secrets)."""
    return fruitlake_run(s3_env, f"s3a://{S3_BUCKET}/{s3_mixed}", f"s3a://{S3_BUCKET}/results", "--k", "3")


def test_every_output_lands_in_the_bucket(s3a_run, s3_bucket):
    keys = s3_bucket.keys("results/")
    assert "results/manifest.json" in keys
    for folder in ("pca_csv/", "features/", "rejects/", "pca_model/metadata/"):
        assert any(key.startswith(f"results/{folder}part-") for key in keys), folder
    assert any(key.startswith("results/pca_model/stages/") for key in keys)
    assert not [key for key in keys if "_staging" in key or key.endswith(".tmp") or "_temporary" in key]
    assert "results/_lock.json" not in keys  # taken on S3 (create-if-absent, read back), released at the end


def test_an_s3_output_locked_by_another_run_is_refused(s3_env, s3_images, s3_bucket):
    import json

    owner = {"host": "emr-primary.example", "pid": 4242, "started_utc": "2026-12-01T10:00:00+00:00", "token": "t"}
    s3_bucket.client.put_object(Bucket=S3_BUCKET, Key="locked/_lock.json", Body=json.dumps(owner).encode())
    done = run_process([sys.executable, "-m", "fruitlake", "run", f"s3a://{S3_BUCKET}/{s3_images}",
                        f"s3a://{S3_BUCKET}/locked", "--k", "3", "--quiet"], {**s3_env, "FRUITLAKE_MASTER": "local[1]"})
    assert done.returncode == 2, explain(done)
    assert "is in use by another fruitlake run (pid 4242 on emr-primary.example" in done.stderr
    assert s3_bucket.keys("locked/") == ["locked/_lock.json"]  # nothing written, the other run's lock kept


def test_csv_and_parquet_read_back_from_s3(s3a_run, s3_bucket):
    table = s3_bucket.csv("results/pca_csv")
    assert list(table.columns) == ["path", "label", "split", "pc_1", "pc_2", "pc_3"]
    assert len(table) == 26 == table["path"].nunique()
    assert table["path"].str.startswith(f"s3a://{S3_BUCKET}/mixed/").all()
    assert set(table["label"]) == {"Apple Braeburn", "Banana", "Kiwi"}
    assert set(table["split"]) == {"Training", "Test"}
    features = s3_bucket.parquet("results/features")
    assert len(features) == 26 and set(features["path"]) == set(table["path"])
    assert {len(vector) for vector in features["features"]} == {1280}
    assert {len(vector) for vector in features["pca"]} == {3}
    scaler = [key for key in s3_bucket.keys("results/pca_model/stages/") if key.endswith(".parquet")]
    assert scaler and pq.read_table(io.BytesIO(s3_bucket.read(scaler[0]))).num_rows == 1


def test_manifest_and_rejects_in_s3(s3a_run, s3_bucket):
    """Every object is read or rejected with its reason: an unreadable one is not a dead run, nor lost."""
    manifest = s3_bucket.json("results/manifest.json")
    assert manifest["input"] == f"s3a://{S3_BUCKET}/mixed" and manifest["output"] == f"s3a://{S3_BUCKET}/results"
    assert (manifest["images_total"], manifest["images_ok"], manifest["images_rejected"]) == (28, 26, 2)
    assert manifest["k"] == 3 and manifest["cnn_images"] == 27 and manifest["images_vanished"] == 0
    rejects = s3_bucket.csv("results/rejects")
    assert list(rejects.columns) == ["path", "reason"]
    reasons = dict(zip(rejects["path"], rejects["reason"], strict=True))
    assert sorted(reasons) == [f"s3a://{S3_BUCKET}/mixed/{name}" for name in ("Test/Banana/corrupt.jpg", ARCHIVED)]
    assert reasons[f"s3a://{S3_BUCKET}/mixed/{ARCHIVED}"].startswith("read failed (access denied")


def test_a_key_with_an_empty_segment_and_its_namesake_are_both_featurized(s3a_run, s3_bucket):
    """`Kiwi//double-slash.jpg` and `Kiwi/double-slash.jpg` are two objects of other images: two rows, labelled
    Kiwi, with the features of their own bytes."""
    features = s3_bucket.parquet("results/features").set_index("path")
    double, single = (features.loc[f"s3a://{S3_BUCKET}/mixed/{key}"] for key in (DOUBLE_SLASH, SINGLE_SLASH))
    assert (double["label"], single["label"], double["split"]) == ("Kiwi", "Kiwi", "Training")
    assert max(abs(a - b) for a, b in zip(double["features"], single["features"], strict=True)) > 1e-3


def test_pack_records_the_objects_it_cannot_read_and_goes_on(s3_env, s3_mixed, tmp_path):
    import json

    table = tmp_path / "table"
    done = run_process([sys.executable, "-m", "fruitlake", "pack", f"s3a://{S3_BUCKET}/{s3_mixed}", str(table)],
                       {**s3_env, "FRUITLAKE_MASTER": "local[1]"})
    assert done.returncode == 0, explain(done)
    marker = json.loads((table / "_fruitlake_table.json").read_text())
    assert (marker["images_total"], marker["files_unreadable"], marker["files_unread"]) == (27, 0, 1)


def test_the_secret_key_is_not_in_the_logs_the_manifest_or_any_output(s3a_run, s3_bucket):
    assert "INFO fruitlake.s3" in s3a_run.stderr and "INFO SparkContext" in s3a_run.stderr  # verbose logs
    assert S3_SECRET not in s3a_run.stdout and S3_SECRET not in s3a_run.stderr
    for key in s3_bucket.keys("results/"):
        assert S3_SECRET.encode() not in s3_bucket.read(key), key


def test_a_bucket_that_does_not_exist_is_a_refusal_naming_it(s3_env, s3_mixed, tmp_path):
    for args in (["pack", "s3a://no-such-bucket/in", str(tmp_path / "table")],
                 ["pack", f"s3a://{S3_BUCKET}/{s3_mixed}", "s3a://no-such-bucket/table"]):
        done = run_process([sys.executable, "-m", "fruitlake", *args], {**s3_env, "FRUITLAKE_MASTER": "local[1]"})
        assert done.returncode == 2, explain(done)
        assert "the bucket 'no-such-bucket' of 's3a://no-such-bucket/" in done.stderr, explain(done)
        assert "Exception" not in done.stderr and "Py4J" not in done.stderr


def test_a_run_from_s3_makes_one_get_per_image_and_no_head_per_object(s3_env, s3_images, s3_bucket, tmp_path):
    """Counted at a proxy in front of the S3 server: the listing comes from ListObjectsV2 pages, each image's bytes
    from one GET (length and time from the listing), where Spark's binaryFile made 3 HEADs and a GET per image."""
    import json
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    from latency_proxy import LatencyProxy

    images = len(s3_bucket.keys(f"{s3_images}/"))
    port = int(s3_env["AWS_ENDPOINT_URL"].rsplit(":", 1)[1])
    with LatencyProxy("127.0.0.1", port, delay=0.0) as proxy:
        fruitlake_run({**s3_env, "AWS_ENDPOINT_URL": proxy.url}, f"s3a://{S3_BUCKET}/{s3_images}",
                      str(tmp_path / "out"), "--k", "2", "--no-report")  # the report reads a thumbnail a label
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["images_total"] == images == 25
    assert proxy.object_gets == images  # one GET per image, none twice
    assert proxy.methods["HEAD"] <= 5  # INPUT's own checks (4), never one per object
    assert proxy.requests <= 1.1 * images + 10
