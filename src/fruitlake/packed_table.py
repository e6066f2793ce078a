"""The format of a table `fruitlake pack` writes: the marker file that says a folder is one, its columns, and
reading it back (refused when it is not pack's)."""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession

from fruitlake import FruitlakeError
from fruitlake.redaction import redact

TABLE_MARKER = "_fruitlake_table.json"  # in a folder `fruitlake pack` wrote: a table of images, not image files
TABLE_COLUMNS = ["path", "label", "split", "length", "modification_time", "file_uri", "content"]


def read_packed_table(spark: SparkSession, uri: str) -> DataFrame:
    """The table's rows as `fruitlake pack` wrote them, or a refusal: a folder holding pack's marker and no
    Parquet, or Parquet with other columns, is not a table pack wrote."""
    from pyspark.errors import AnalysisException

    shown = redact(uri)
    try:
        table = spark.read.parquet(uri)
    except AnalysisException:  # no Parquet file to take a schema from
        raise FruitlakeError(f"INPUT {shown!r} holds {TABLE_MARKER} but no Parquet table: it is not a table "
                             "`fruitlake pack` wrote (pack it again with --mode overwrite)") from None
    lacking = [name for name in TABLE_COLUMNS if name not in table.columns]
    if lacking:
        raise FruitlakeError(f"INPUT {shown!r} holds {TABLE_MARKER} but its Parquet lacks the columns "
                             f"{', '.join(lacking)}: it is not a table `fruitlake pack` wrote")
    return table.select(*TABLE_COLUMNS)
