"""jvmcache.py and jvmcache_build.py: the JVM class archive is made once, used by local sessions, and never needed."""

import os
import subprocess
import sys
import textwrap

from fruitlake import jvmcache, jvmcache_build
from fruitlake.cache import cache_dir
from fruitlake.session import LOCAL_GC, LOCAL_JIT, _java_options
from fruitlake.settings import JVM_TUNING


def test_local_sessions_use_the_archive_when_it_exists_and_only_then(tmp_path, monkeypatch):
    monkeypatch.setenv("FRUITLAKE_CACHE", str(tmp_path))
    monkeypatch.delenv(JVM_TUNING, raising=False)
    archive = jvmcache.archive_path()
    assert archive is not None and archive.parent == tmp_path / "jvm"
    assert jvmcache.java_options() == []
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"archive")
    assert jvmcache.java_options() == [f"-XX:SharedArchiveFile={archive}", jvmcache.QUIET]
    assert f"-XX:SharedArchiveFile={archive}" in _java_options("local[2]") and LOCAL_JIT in _java_options("local[2]")
    # A cluster's driver runs no tasks: it keeps the JVM's defaults.
    assert "SharedArchive" not in _java_options("spark://127.0.0.1:7077")
    assert LOCAL_JIT not in _java_options("spark://127.0.0.1:7077")
    assert LOCAL_GC in _java_options("local[2]") and LOCAL_GC not in _java_options("spark://127.0.0.1:7077")
    monkeypatch.setenv(JVM_TUNING, "off")
    assert "SharedArchive" not in _java_options("local[2]") and LOCAL_JIT not in _java_options("local[2]")
    assert LOCAL_GC not in _java_options("local[2]")
    monkeypatch.delenv(JVM_TUNING)
    assert jvmcache.java_options(tmp_path / "new.part")[0] == f"-XX:ArchiveClassesAtExit={tmp_path / 'new.part'}"
    assert f"-XX:ArchiveClassesAtExit={tmp_path / 'new.part'}" in _java_options("local[2]", tmp_path / "new.part")


def test_a_local_sessions_jvm_collects_with_the_serial_collector(spark):
    """In local mode the JVM's heap follows what survives a collection, not how fast tasks allocate (LOCAL_GC)."""
    beans = spark.sparkContext._jvm.java.lang.management.ManagementFactory.getGarbageCollectorMXBeans()
    assert {bean.getName() for bean in beans} == {"Copy", "MarkSweepCompact"}  # the serial collector's two


def test_the_archive_is_keyed_by_the_java_and_the_spark_jars(tmp_path, monkeypatch):
    monkeypatch.setenv("FRUITLAKE_CACHE", str(tmp_path))
    jars = tmp_path / "spark" / "jars"
    jars.mkdir(parents=True)
    (jars / "spark-core.jar").write_bytes(b"1")
    monkeypatch.setenv("SPARK_HOME", str(tmp_path / "spark"))
    first = jvmcache.archive_path()
    (jars / "spark-sql.jar").write_bytes(b"2")
    assert jvmcache.archive_path() != first  # other jars: another archive
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-java"))
    assert jvmcache.archive_path() is None  # no java: no archive, and sessions start as before


def test_a_built_archive_is_what_a_new_session_loads_spark_from(tmp_path, weights_path):
    (tmp_path / "cache").mkdir()
    converted = cache_dir() / "onnx"
    if converted.is_dir():  # the other tests' ONNX conversion: this test is about the JVM
        (tmp_path / "cache" / "onnx").symlink_to(converted)
    env = {**os.environ, "FRUITLAKE_CACHE": str(tmp_path / "cache"), "FRUITLAKE_WEIGHTS": weights_path,
           "PYSPARK_PYTHON": sys.executable}
    env.pop(JVM_TUNING, None)
    built = subprocess.run([sys.executable, "-m", "fruitlake.jvmcache_build"], env=env, capture_output=True, text=True,
                           timeout=900)
    assert built.returncode == 0, built.stderr[-2000:]
    assert built.stdout.startswith("JVM class archive: ") and "[warning]" not in built.stdout + built.stderr
    archives = list((tmp_path / "cache" / "jvm").glob("*.jsa"))
    assert len(archives) == 1 and not list((tmp_path / "cache" / "jvm").glob("*.part"))
    loaded = tmp_path / "classes.log"
    session = textwrap.dedent(f"""
        from fruitlake import jvmcache, jvmcache_build
        from fruitlake.session import spark_session
        chosen = jvmcache.java_options
        jvmcache.java_options = lambda *dump: chosen(*dump) + ["-Xlog:class+load=info:file={loaded}"]
        with spark_session("local[1]") as spark:
            assert spark.range(3).count() == 3
    """)
    started = subprocess.run([sys.executable, "-c", session], env=env, capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, started.stderr[-2000:]
    from_archive = [line for line in loaded.read_text().splitlines()
                    if "org.apache.spark." in line and "shared objects file (top)" in line]
    assert len(from_archive) > 1000  # Spark's own classes came from the archive, not from its jars


def test_a_new_archive_keeps_only_the_newest_others(tmp_path):
    made = tmp_path / "spark-new.jsa"
    made.write_bytes(b"new")
    for age in range(5):
        old = tmp_path / f"spark-old{age}.jsa"
        old.write_bytes(b"old")
        os.utime(old, (1_000_000 - age, 1_000_000 - age))  # old0 is the newest of them
    jvmcache_build._prune(made, keep=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spark-new.jsa", "spark-old0.jsa", "spark-old1.jsa",
                                                          "spark-old2.jsa"]
