"""S3 through Spark's Hadoop connectors: s3a:// anywhere, s3:// natively on EMR and mapped to S3A elsewhere.

Only runs whose INPUT or OUTPUT is s3:// or s3a:// are touched, so local runs need no connector jars.
Settings come from the usual AWS environment (`AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`, `AWS_REGION` /
`AWS_DEFAULT_REGION`). Credentials are left to the AWS SDK's default chain (environment keys, profile,
web identity, instance role). fruitlake never reads a secret: none reaches a Spark conf, a log or a manifest.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from fruitlake import FruitlakeError, fs
from fruitlake.settings import S3A_JARS as JARS_ENV
from fruitlake.settings import Settings

if TYPE_CHECKING:  # annotations only: Python workers (fetch.py) read the settings below without PySpark
    from pyspark.sql import SparkSession

    from fruitlake.fs import JavaObject

log = logging.getLogger(__name__)

S3_SCHEMES = ("s3", "s3a")
S3A_FILESYSTEM = "org.apache.hadoop.fs.s3a.S3AFileSystem"
S3A_ABSTRACT_FILESYSTEM = "org.apache.hadoop.fs.s3a.S3A"
HADOOP_AWS_PACKAGE = "org.apache.hadoop:hadoop-aws:3.3.4"  # the Hadoop release PySpark 3.5 is built on
CREDENTIALS_CHAIN = "com.amazonaws.auth.DefaultAWSCredentialsProviderChain"  # env keys, profile, roles
# Files every EMR node has; there EMR configures s3:// (S3A since EMR 7.10, EMRFS before) and s3a://: fruitlake
# changes nothing.
EMR_MARKERS = ("/mnt/var/lib/info/job-flow.json", "/var/aws/emr/userData.json", "/usr/share/aws/emr")


def uses_s3(uris: Iterable[str]) -> bool:
    return any(urlparse(uri).scheme.lower() in S3_SCHEMES for uri in uris)


def on_emr() -> bool:
    return any(os.path.exists(marker) for marker in EMR_MARKERS)


def endpoint(environ: Mapping[str, str]) -> str | None:
    """The S3 endpoint the AWS environment names (MinIO, moto, LocalStack), or None for AWS's own."""
    return environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL") or None


def region(environ: Mapping[str, str]) -> str | None:
    return environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or None


def hadoop_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """S3A settings from the AWS environment variables; never a credential."""
    settings = {"fs.s3a.aws.credentials.provider": CREDENTIALS_CHAIN}
    endpoint_url = endpoint(environ)
    if endpoint_url:
        # A custom endpoint (MinIO, moto, LocalStack) rarely has per-bucket DNS names: buckets go in the path.
        settings["fs.s3a.endpoint"] = endpoint_url
        settings["fs.s3a.path.style.access"] = "true"
        if urlparse(endpoint_url).scheme.lower() == "http":
            settings["fs.s3a.connection.ssl.enabled"] = "false"
    region_name = region(environ)
    if region_name:
        settings["fs.s3a.endpoint.region"] = region_name
    return settings


def connector_jars(settings: Settings, spark_home: str | None = None) -> dict[str, str]:
    """Where the S3A classes come from: $FRUITLAKE_S3A_JARS (offline), Spark's own jars, or Maven Central."""
    folder = settings.s3a_jars
    if folder:
        jars = sorted(Path(folder).glob("*.jar"))
        if not any(jar.name.startswith("hadoop-aws-") for jar in jars):
            raise FruitlakeError(
                f"{JARS_ENV}={folder!r} holds no hadoop-aws-*.jar; put hadoop-aws and its AWS SDK bundle "
                "there (`make jars` fetches a working pair), or unset it to download them from Maven Central"
            )
        return {"spark.jars": ",".join(str(jar.resolve()) for jar in jars)}
    if spark_home and any((Path(spark_home) / "jars").glob("hadoop-aws-*.jar")):
        return {}
    return {"spark.jars.packages": HADOOP_AWS_PACKAGE}


def session_conf(uris: Iterable[str], environ: Mapping[str, str] | None = None,
                 settings: Settings | None = None) -> dict[str, str]:
    """Spark confs for a session fruitlake creates: the connector jars (`settings`, from `environ` when not given)
    and S3A settings from the AWS variables of `environ` (the process's when not given), or nothing at all."""
    environ = os.environ if environ is None else environ
    if not uses_s3(uris) or on_emr():
        return {}
    settings = Settings.from_environ(environ) if settings is None else settings
    import pyspark

    conf = connector_jars(settings, environ.get("SPARK_HOME") or str(Path(pyspark.__file__).parent))
    conf.update({f"spark.hadoop.{key}": value for key, value in hadoop_settings(environ).items()})
    log.info("S3 through S3A, connector from %s", conf.get("spark.jars") or conf.get("spark.jars.packages")
             or "Spark's jars")
    return conf


def jvm_did_not_start(conf: Mapping[str, str]) -> str:
    """What to tell the user when Spark's JVM exits before it starts (PySpark: "Java gateway process exited")."""
    if "spark.jars.packages" in conf:
        return (
            f"Spark could not start: the S3A connector jars are missing (${JARS_ENV} is not set and "
            f"{conf['spark.jars.packages']} could not be downloaded from Maven Central; offline?). Get them with "
            f"`make jars` and `export {JARS_ENV}=$PWD/.cache/jars` (a folder holding hadoop-aws-*.jar and its "
            "aws-java-sdk-bundle-*.jar), or put hadoop-aws in Spark's jars/ folder"
        )
    return ("Spark's JVM exited before it started (Java gateway process exited): check that Java 17 is installed "
            "(JAVA_HOME, or java on PATH); rerun with -v to see its output")


def _has_filesystem(spark: SparkSession, scheme: str) -> bool:
    from py4j.protocol import Py4JJavaError

    context = spark.sparkContext
    filesystems = fs.jvm(spark).org.apache.hadoop.fs.FileSystem
    try:
        filesystems.getFileSystemClass(scheme, context._jsc.hadoopConfiguration())
    except Py4JJavaError:
        return False
    return True


# Where a value comes from when nobody chose it: Hadoop's defaults, and Spark's (the AWS endpoint and region).
DEFAULT_SOURCES = ("core-default.xml", "Set by Spark to default values")


def _set_by_someone(hadoop_conf: JavaObject, key: str) -> bool:
    """True when `key` was chosen by someone (spark-submit --conf, core-site.xml, code), not defaulted."""
    sources = hadoop_conf.getPropertySources(key)
    return sources is not None and any(source not in DEFAULT_SOURCES for source in sources)


def configure_session(
    spark: SparkSession, uris: Iterable[str], environ: Mapping[str, str] | None = None
) -> None:
    """Make a running session read and write the run's s3:// and s3a:// URIs.

    Off EMR, `s3://` is mapped to S3A when nothing implements it, and the S3A settings the session does not
    have yet are filled in from the AWS environment: a given session (spark-submit, a notebook) keeps its own.
    """
    environ = os.environ if environ is None else environ
    uris = list(uris)
    if not uses_s3(uris) or on_emr():
        return
    if not _has_filesystem(spark, "s3a"):
        raise FruitlakeError(
            f"this Spark session cannot open s3a:// (no S3A connector): start it with "
            f"spark.jars.packages={HADOOP_AWS_PACKAGE} (spark-submit --packages ...) or with the jars in "
            f"${JARS_ENV} as spark.jars, or let fruitlake create the session"
        )
    hadoop_conf = spark.sparkContext._jsc.hadoopConfiguration()
    if not _has_filesystem(spark, "s3"):
        hadoop_conf.set("fs.s3.impl", S3A_FILESYSTEM)
        hadoop_conf.set("fs.AbstractFileSystem.s3.impl", S3A_ABSTRACT_FILESYSTEM)
        log.info("s3:// has no connector of its own here: served by S3A")
    for key, value in hadoop_settings(environ).items():
        if not _set_by_someone(hadoop_conf, key):
            hadoop_conf.set(key, value)
    log.info(
        "S3A endpoint %s, region %s, path-style access %s",
        hadoop_conf.get("fs.s3a.endpoint") or "AWS default",
        hadoop_conf.get("fs.s3a.endpoint.region") or "default",
        hadoop_conf.get("fs.s3a.path.style.access"),
    )
