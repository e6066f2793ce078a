import pytest

from fruitlake import FruitlakeError, cli, options
from fruitlake.config import ProjectConfig, RunConfig, from_json, parse_split_names, to_json
from fruitlake.settings import Settings


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"k": 2000}, "k=2000 must be between 1 and the 1280 features"),
        ({"k": 0}, "k=0"),
        ({"variance": 0.0}, r"variance=0.0 must be in \(0, 1\]"),
        ({"variance": 1.5}, "variance=1.5"),
        ({"mode": "append"}, "mode='append' is unknown"),
        ({"engine": "torch"}, "engine='torch' is unknown"),
        ({"image_size": 8}, "image_size=8"),
        ({"batch_size": 0}, "batch_size=0"),
    ],
)
def test_bad_options_fail_fast_and_say_what_is_wrong(options, message):
    with pytest.raises(FruitlakeError, match=message):
        RunConfig(input="in", output="out", weights="w.h5", **options)


def test_the_command_lines_weights_default_to_the_settings(monkeypatch):
    args = cli.parser().parse_args(["run", "in", "out"])
    assert options.run_config(args, Settings(weights="/models/w.h5")).weights == "/models/w.h5"
    assert options.run_config(args, Settings()).weights == "imagenet"
    monkeypatch.setenv("FRUITLAKE_WEIGHTS", "/models/env.h5")  # no settings given: the environment's
    assert options.run_config(args).weights == "/models/env.h5"
    assert options.run_config(cli.parser().parse_args(["run", "in", "out", "--weights", "w.h5"])).weights == "w.h5"
    assert RunConfig("in", "out").weights == "imagenet"  # a config is a value: the environment is read at the edge


def test_config_is_frozen_and_serialisable():
    config = RunConfig("in", "out", weights="w.h5", k=5)
    assert config.to_dict()["k"] == 5
    with pytest.raises(AttributeError):
        config.k = 6


def test_split_names_are_checked_and_spelled_as_the_splits():
    config = RunConfig("in", "out", weights="w.h5", split_names={"holdout": "test", "Dev-2": " VALIDATION "})
    assert config.split_names == {"holdout": "Test", "Dev-2": "Validation"}
    assert config.to_dict()["split_names"] == {"holdout": "Test", "Dev-2": "Validation"}  # the manifest's config
    assert from_json(to_json(config)) == config
    project = ProjectConfig("in", "out", from_run="run", split_names={"holdout": "Training"})
    assert project.split_names == {"holdout": "Training"}
    assert RunConfig("in", "out", weights="w.h5").split_names == {}


@pytest.mark.parametrize(
    ("names", "message"),
    [
        ({"": "Test"}, "a folder name is empty"),
        ({"  ": "Test"}, "a folder name is empty"),
        ({"holdout": "Tests"}, "holdout='Tests' names no split; choose Training, Test, Validation"),
        ({"holdout": ""}, "names no split"),
        ({"a/b": "Test"}, "'a/b' is not one folder name"),
        ({"Holdout": "Test", "holdout": "Training"}, "names the folder 'holdout' twice"),
        (["holdout", "Test"], "is not a mapping"),
    ],
)
def test_bad_split_names_are_refused(names, message):
    with pytest.raises(FruitlakeError, match=message):
        RunConfig("in", "out", weights="w.h5", split_names=names)


def test_split_names_option_text():
    assert parse_split_names("holdout=Test, eval = validation") == {"holdout": "Test", "eval": "Validation"}
    for text, message in [("holdout", "'holdout' is not NAME=SPLIT"), ("=Test", "a folder name is empty"),
                          ("a=Test,a=Training", "names the folder 'a' twice"), ("a=Tst", "names no split")]:
        with pytest.raises(FruitlakeError, match=message):
            parse_split_names(text)


@pytest.mark.parametrize("command", [["run", "in", "out"], ["run", "in", "out", "--dry-run"],
                                     ["project-images", "in", "out", "--from-run", "r"], ["pack", "in", "table"]])
def test_every_command_that_reads_splits_takes_split_names(command, capsys):
    args = cli.parser().parse_args([*command, "--split-names", "holdout=test,eval=Validation"])
    assert args.split_names == {"holdout": "Test", "eval": "Validation"}
    assert cli.parser().parse_args(command).split_names == {}
    if command[0] != "pack":
        make = options.run_config if command[0] == "run" else options.project_config
        assert make(args).split_names == {"holdout": "Test", "eval": "Validation"}
    with pytest.raises(SystemExit):
        cli.parser().parse_args([*command, "--split-names", "holdout=Tst"])
    assert "holdout='Tst' names no split; choose Training, Test, Validation" in capsys.readouterr().err
