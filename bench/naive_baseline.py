"""The classic "Fruits-360 on Spark" notebook, as people paste it onto EMR: the baseline fruitlake is measured against.

binaryFile -> repartition(20) -> a pandas UDF that rebuilds the Keras model in every partition and calls
model.predict per Arrow batch -> PCA fitted and applied on a DataFrame that is never cached, so every action
recomputes the CNN. Usage: python naive_baseline.py INPUT OUTPUT WEIGHTS
"""

import sys
import time
from collections.abc import Iterator

started = time.perf_counter()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from pyspark.ml.feature import PCA  # noqa: E402
from pyspark.ml.functions import array_to_vector, vector_to_array  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402
from pyspark.sql.functions import col, element_at, pandas_udf, split  # noqa: E402

source, target, weights = sys.argv[1:4]
spark = SparkSession.builder.master("local[*]").config("spark.driver.memory", "4g").getOrCreate()
spark.sparkContext.setLogLevel("ERROR")
images = spark.read.format("binaryFile").option("pathGlobFilter", "*.jpg").option("recursiveFileLookup", "true")
images = images.load(source).repartition(20)
images = images.withColumn("label", element_at(split(col("path"), "/"), -2))
broadcast_weights = spark.sparkContext.broadcast(weights)


@pandas_udf("array<float>")
def featurize_udf(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
    import io

    import tensorflow as tf
    from PIL import Image

    model = tf.keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(224, 224, 3),
                                              pooling="avg")
    model.load_weights(broadcast_weights.value)
    for content in batches:
        arrays = [np.asarray(Image.open(io.BytesIO(b)).convert("RGB").resize((224, 224))) for b in content]
        batch = tf.keras.applications.mobilenet_v2.preprocess_input(np.stack(arrays).astype("float32"))
        yield pd.Series(list(model.predict(batch, verbose=0)))


features = images.select("path", "label", featurize_udf("content").alias("features"))
vectors = features.withColumn("vec", array_to_vector("features"))
model = PCA(k=50, inputCol="vec", outputCol="pca").fit(vectors)
reduced = model.transform(vectors).select("path", "label", vector_to_array("pca").alias("pca"))
rows = reduced.select("path", "label", *[col("pca")[i].alias(f"pc_{i + 1}") for i in range(50)])
rows.write.mode("overwrite").option("header", "true").csv(target)
count = spark.read.option("header", "true").csv(target).count()
print(f"naive baseline: {count} rows in {time.perf_counter() - started:.1f} s")
