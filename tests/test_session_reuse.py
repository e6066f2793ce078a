"""spark_session() never stops a running session it did not create, even one not active in this thread."""

from fruitlake.session import spark_session


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
