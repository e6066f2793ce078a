"""Real photos, real weights: the reduced features must be good enough for a classifier."""

import pytest
from helpers import read_csv_dir, read_manifest

from fruitlake.config import RunConfig
from fruitlake.pipeline import run


@pytest.mark.slow
def test_grocery_fruits_probe_on_pca_50(spark, grocery_root, weights_path, tmp_path):
    from sklearn.linear_model import LogisticRegression

    output = tmp_path / "grocery"
    run(RunConfig(str(grocery_root), str(output), k=50, weights=weights_path), spark=spark)
    table = read_csv_dir(output / "pca_csv")
    assert len(table) == 2370 and read_manifest(output)["images_ok"] == 2370
    components = [f"pc_{i}" for i in range(1, 51)]
    train, test = table[table["split"] == "Training"], table[table["split"] == "Test"]
    assert (len(train), len(test)) == (1142, 1117)
    probe = LogisticRegression(max_iter=3000).fit(train[components], train["label"])
    accuracy = probe.score(test[components], test["label"])
    print(f"grocery-fruits probe accuracy on PCA-50: {accuracy:.3f}")
    assert accuracy >= 0.60
