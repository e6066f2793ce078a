"""session.py: a running session is used as it is and never stopped by fruitlake."""

import threading

from fruitlake.session import executor_count, spark_session


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
