"""Real photos, real weights: the reduced features must be good for a classifier (one run, 2 tests)."""

import json

import pytest
from helpers import read_csv_dir, read_manifest, run

from fruitlake.config import RunConfig

COMPONENTS = [f"pc_{i}" for i in range(1, 51)]


@pytest.fixture(scope="module")
def grocery_run(spark, grocery_root, weights_path, tmp_path_factory):
    output = tmp_path_factory.mktemp("grocery") / "result"
    run(RunConfig(str(grocery_root), str(output), k=50, weights=weights_path), spark=spark)
    return output, read_csv_dir(output / "pca_csv")


@pytest.fixture(scope="module")
def independent_accuracy(grocery_run) -> float:
    """Logistic regression on the CSV's 50 components: trained on Training, scored on Test."""
    from sklearn.linear_model import LogisticRegression

    _, table = grocery_run
    table = table.sort_values("path")
    train, test = table[table["split"] == "Training"], table[table["split"] == "Test"]
    assert (len(train), len(test)) == (1142, 1117)
    probe = LogisticRegression(max_iter=3000).fit(train[COMPONENTS], train["label"])
    return float(probe.score(test[COMPONENTS], test["label"]))


@pytest.mark.slow
def test_grocery_fruits_probe_on_pca_50(grocery_run, independent_accuracy):
    output, table = grocery_run
    assert len(table) == 2370 and read_manifest(output)["images_ok"] == 2370
    print(f"grocery-fruits probe accuracy on PCA-50: {independent_accuracy:.3f}")
    assert independent_accuracy >= 0.60


@pytest.mark.slow
def test_grocery_fruits_report_probe_matches_an_independent_one(grocery_run, independent_accuracy):
    output, _ = grocery_run
    report = json.loads((output / "report.json").read_text())
    probe = report["probe"]
    print(f"report probe accuracy {probe['accuracy']:.4f}, independent {independent_accuracy:.4f}")
    assert probe["split_rule"] == "Training folder vs Test folder"
    assert (probe["train_rows"], probe["test_rows"]) == (1142, 1117)
    assert abs(probe["accuracy"] - independent_accuracy) <= 0.02
    assert (output / "report.html").stat().st_size > 50_000
