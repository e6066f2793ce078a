"""session.py: a running session is used as it is and never stopped by fruitlake."""

import tempfile
import threading

import pytest

from fruitlake import FruitlakeError
from fruitlake.session import check_master, executor_count, spark_conf, spark_session


def test_a_running_session_is_used_and_left_running_from_any_thread(spark):
    seen = {}

    def in_a_new_thread():
        # A new Python thread gets a new JVM thread, which has no active session (pinned-thread mode).
        with spark_session("local[1]") as given:
            seen["context"] = given.sparkContext

    worker = threading.Thread(target=in_a_new_thread)
    worker.start()
    worker.join()
    assert seen["context"] is spark.sparkContext
    assert spark.sparkContext._jsc is not None and spark.range(3).count() == 3  # still running


def test_local_mode_has_no_executors_besides_the_driver(spark):
    assert executor_count(spark) == 0


def test_a_running_session_that_is_not_active_here_is_reused_not_stopped(spark):
    jvm = spark.sparkContext._jvm
    jvm.SparkSession.clearActiveSession()  # what a py4j thread served anew sees
    try:
        with spark_session("local[1]") as given:
            assert given.sparkContext is spark.sparkContext
        assert spark.sparkContext._jsc is not None
        assert spark.range(3).count() == 3
    finally:
        jvm.SparkSession.setActiveSession(spark._jsparkSession)


@pytest.mark.parametrize("master", ["local", "local[*]", "local[2]", "local[4, 2]", "local-cluster[2,1,1024]",
                                    "spark://host:7077", "spark://a:7077,b:7077", "yarn", "k8s://https://h:443"])
def test_the_master_urls_spark_knows_are_taken(master):
    assert check_master(master) == master


@pytest.mark.parametrize("master", ["bogus://x", "local[two]", "spark:/host", "Local[2]x", ""])
def test_any_other_master_is_refused_before_a_jvm_starts(master):
    with pytest.raises(FruitlakeError, match=r"is not a Spark master URL: give local\[\*\]"):
        check_master(master)


ARROW_BATCH, SPLIT_BYTES = "spark.sql.execution.arrow.maxRecordsPerBatch", "spark.sql.files.maxPartitionBytes"


def test_spark_conf_restores_what_was_set_and_unsets_what_was_not(spark):
    spark.conf.set(ARROW_BATCH, "777")
    spark.conf.unset(SPLIT_BYTES)
    default = spark.conf.get(SPLIT_BYTES)  # Spark's own (128 MB)
    try:
        with spark_conf(spark, {ARROW_BATCH: "16", SPLIT_BYTES: "4096"}):
            assert (spark.conf.get(ARROW_BATCH), spark.conf.get(SPLIT_BYTES)) == ("16", "4096")
            assert spark.range(3).count() == 3
        assert spark.conf.get(ARROW_BATCH) == "777"
        assert spark.conf.get(SPLIT_BYTES, None) is None  # unset again: Spark's default applies
        assert spark.conf.get(SPLIT_BYTES) == default != "4096"

        with pytest.raises(ZeroDivisionError), spark_conf(spark, {ARROW_BATCH: "8", SPLIT_BYTES: "1024"}):
            assert spark.conf.get(ARROW_BATCH) == "8"
            _ = 1 / 0
        assert (spark.conf.get(ARROW_BATCH), spark.conf.get(SPLIT_BYTES, None)) == ("777", None)
    finally:
        spark.conf.unset(ARROW_BATCH)


def test_a_stage_leaves_the_given_sessions_conf_as_it_was(spark):
    """The settings the featurize and pack stages change (Arrow batches, file splits, tolerant reads)."""
    from fruitlake.session import READ_TOLERANTLY, file_splits, tolerant_reads

    changed = {ARROW_BATCH: "16", **file_splits(spark, 100, 10_000_000), **dict.fromkeys(READ_TOLERANTLY, "true")}
    before = {key: spark.conf.get(key, None) for key in changed}
    with tolerant_reads(spark):
        assert all(spark.conf.get(key) == "true" for key in READ_TOLERANTLY)
    with spark_conf(spark, changed):
        assert {key: spark.conf.get(key) for key in changed} == changed
    assert {key: spark.conf.get(key, None) for key in changed} == before


def test_a_jvm_that_does_not_start_leaves_no_folder_in_the_temp_directory(monkeypatch, tmp_path):
    """No session runs here for the length of the test; the builder fails as when Java is missing."""
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    import fruitlake.session

    class NoJava:
        def config(self, *_):
            return self

        def getOrCreate(self):  # noqa: N802 - Spark's name
            raise RuntimeError("[JAVA_GATEWAY_EXITED] Java gateway process exited before sending its port number.")

    monkeypatch.setattr(SparkSession, "getActiveSession", staticmethod(lambda: None))
    monkeypatch.setattr(SparkContext, "_active_spark_context", None)
    monkeypatch.setattr(fruitlake.session, "_builder", lambda *_: NoJava())
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(FruitlakeError, match="Java gateway process exited"), spark_session("local[1]"):
        pass
    assert list(tmp_path.iterdir()) == []


def test_a_standalone_master_nobody_answers_is_refused_at_once_and_one_that_answers_is_taken():
    """Before a JVM starts (Spark alone retried for about 69 s, then said "stopped SparkContext")."""
    import socket

    from fruitlake import FruitlakeError
    from fruitlake.session import require_reachable

    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        open_port = listening.getsockname()[1]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            closed_port = probe.getsockname()[1]  # bound, never listening: connections are refused
            with pytest.raises(FruitlakeError, match=rf"no Spark master answers at 127.0.0.1:{closed_port} "):
                require_reachable(f"spark://127.0.0.1:{closed_port}")
            require_reachable(f"spark://127.0.0.1:{closed_port},127.0.0.1:{open_port}")  # one of several answers
    require_reachable("local[2]")  # nothing to reach
