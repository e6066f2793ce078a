"""plan(config) -> RunPlan: every reason to refuse a run, found before OUTPUT is created, cleared or written.

The plan resolves what the later stages only read: what OUTPUT holds, the images of INPUT, the network (once),
the PCA to apply, and for an incremental run the rows already in the store.

What differs between `fruitlake run` and `project-images` is read from the config in one place, `command_of`,
into a `Command`; nothing after it asks which config it has. Each stage gets a narrow input built here
(`RunPlan.featurizing`, `RunPlan.publishing`, `Command.fit` for reduce), never the plan or the config.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from fruitlake import FruitlakeError, fs
from fruitlake.config import Config, RunConfig
from fruitlake.discover import Discovered, check_input_root, discover
from fruitlake.engines import EngineSpec
from fruitlake.featurize_stage import FeaturizeInput
from fruitlake.manifest import Manifest
from fruitlake.models import NETWORKS
from fruitlake.network import RunNetwork
from fruitlake.output import MANIFEST, PCA_MODEL, OutputState, datasets_of, inspect_output
from fruitlake.progress import Stages
from fruitlake.publish import PublishTarget
from fruitlake.redaction import redact
from fruitlake.reduce import PcaChoice, PcaPlan, plan_pca, same_pca
from fruitlake.safety import check_separate
from fruitlake.settings import Settings
from fruitlake.store import Store, missing, settled


@dataclass(frozen=True, kw_only=True)
class Command:
    """What differs between `fruitlake run` and `project-images`, read from the config once (`command_of`)."""

    name: str  # run or project-images
    input: str
    output: str
    from_run: str | None  # project-images: the OUTPUT of the finished run whose network and PCA it applies
    fit: PcaChoice | None  # run: how its PCA is fitted or reused; project-images loads --from-run's
    network: EngineSpec | None  # run: the network as configured; project-images: None, --from-run's
    weights: str | None  # the weights file; for project-images where --from-run's lives now (None: where it was)
    onnx: str | None  # run: a prebuilt ONNX conversion of the weights
    report: bool  # the run ends with its report; project-images makes none

    @property
    def uris(self) -> tuple[str, ...]:
        """The locations the session reads and writes (S3 settings per bucket)."""
        return (self.input, self.output) + ((self.from_run,) if self.from_run is not None else ())


def command_of(config: Config) -> Command:
    """The one place that asks which command a config is for."""
    if isinstance(config, RunConfig):
        fit = PcaChoice(pca=config.pca, k=config.k, variance=config.variance,
                        feature_dim=NETWORKS[config.model].feature_dim)
        network = EngineSpec(model=config.model, image_size=config.image_size, engine=config.engine or "onnx",
                             precision=config.precision, batch_size=config.batch_size, max_pixels=config.max_pixels)
        return Command(name=config.command, input=config.input, output=config.output, from_run=None, fit=fit,
                       network=network, weights=config.weights, onnx=config.onnx, report=config.report)
    return Command(name=config.command, input=config.input, output=config.output, from_run=config.from_run, fit=None,
                   network=None, weights=config.weights, onnx=None, report=False)


@dataclass(frozen=True, kw_only=True)
class RunPlan:
    """Everything the checks established; nothing has been written to OUTPUT yet."""

    config: Config
    command: Command
    output: str  # OUTPUT without a trailing slash
    state: OutputState
    previous: Manifest | None  # the manifest of the run an incremental run adds to
    found: Discovered
    store: Store
    pca: PcaPlan
    in_store: DataFrame | None  # the rows the store holds, for an incremental run
    images_missing: int  # stored rows whose file left INPUT
    network: RunNetwork

    @property
    def incremental(self) -> bool:
        return self.config.mode == "incremental"

    @property
    def report(self) -> bool:
        """Whether the run ends with its report: a run's option; project-images makes none."""
        return self.command.report

    @property
    def settled(self) -> DataFrame | None:
        """The stored rows this run does not redo: all but rejects for another --max-bytes or --max-pixels."""
        if self.in_store is None:
            return None
        return settled(self.in_store, self.config.max_bytes, self.config.max_pixels)

    @property
    def featurizing(self) -> FeaturizeInput:
        """The featurize stage's input."""
        return FeaturizeInput(
            output=self.output, set_aside=self.config.mode == "overwrite" and not self.state.empty, found=self.found,
            store=self.store, network=self.network, first_run=self.in_store is None, settled=self.settled,
            drop_missing=self.config.missing == "drop" and self.images_missing > 0,
            commit_every=self.config.commit_every, max_bytes=self.config.max_bytes,
        )

    @property
    def publishing(self) -> PublishTarget:
        """The publish stage's input: where the datasets go, and what OUTPUT held before the run."""
        previous = self.previous
        return PublishTarget(
            output=self.output, datasets=tuple(datasets_of(self.command.name)), writes_model=self.pca.fits,
            previous_batch=previous.store_batch if previous is not None else None,
            same_pca=previous is not None and same_pca(self.pca, previous), incremental=self.incremental,
            was_empty=self.state.empty,
        )

    @contextmanager
    def releasing(self) -> Iterator[RunPlan]:
        """The plan, its network's broadcast and local copies, and INPUT's listing dropped when the block ends."""
        try:
            yield self
        finally:
            self.network.release()
            self.found.release()


def check_locations(spark: SparkSession, command: Command) -> Manifest | None:
    """Before the lock puts anything in OUTPUT: --from-run is a finished run (its manifest is returned), and INPUT,
    OUTPUT and --from-run lie apart from each other."""
    if fs.exists(spark, command.output) and not fs.is_dir(spark, command.output):  # before the lock goes in it
        raise FruitlakeError(f"OUTPUT {redact(command.output)!r} exists and is a file, not a folder")
    from_run = _finished_run(spark, command.from_run) if command.from_run is not None else None
    locations = {"INPUT": fs.qualify(spark, command.input), "OUTPUT": fs.qualify(spark, command.output)}
    if command.from_run is not None:
        locations["--from-run"] = fs.qualify(spark, command.from_run)
    check_separate(locations)
    return from_run


def plan(spark: SparkSession, config: Config, stages: Stages, from_run: Manifest | None = None,
         settings: Settings | None = None, command: Command | None = None) -> RunPlan:
    """Every check that can refuse the run, and what the later stages read; `from_run` is the manifest
    `check_locations` read for project-images (read here if not given); `settings`: where the network's ONNX
    conversion is cached (the environment's when not given); `command`: `command_of(config)`, if made already."""
    command = command_of(config) if command is None else command
    output = config.output.rstrip("/")
    state = inspect_output(spark, output, config.mode)
    previous = state.manifest if config.mode == "incremental" else None
    if previous is not None and previous.command != config.command:
        raise FruitlakeError(
            f"OUTPUT {redact(output)!r} was written by `fruitlake {previous.command}`; "
            f"`fruitlake {config.command} --mode incremental` cannot add to it"
        )
    if command.from_run is not None and from_run is None:
        from_run = _finished_run(spark, command.from_run)
    avoid = (output,) + ((command.from_run.rstrip("/"),) if command.from_run is not None else ())
    with stages("discover", spark) as shown:
        found = discover(spark, config.input, avoid=avoid, split_names=config.split_names)
        shown.count(found.count)
    try:
        return _plan_found(spark, config, command, stages, from_run, output, state, previous, found,
                           None if settings is None else settings.cache)
    except BaseException:
        found.release()
        raise


def _plan_found(spark: SparkSession, config: Config, command: Command, stages: Stages, from_run: Manifest | None,
                output: str, state: OutputState, previous: Manifest | None, found: Discovered,
                cache: Path | None) -> RunPlan:
    if previous is not None:
        check_input_root(previous.input_root, found.root)
    store = Store(spark, output)
    pca = plan_pca(spark, command.fit, output, previous, from_run, command.from_run)
    in_store = store.rows() if config.mode == "incremental" else None
    gone = missing(in_store, found.listing)
    images_missing = gone.count() if gone is not None else 0
    _check_k(command, pca, found.count + (images_missing if config.missing == "keep" else 0))
    with stages("load_model") as shown:
        network = _network(spark, command, config, from_run, cache)
        shown.note(f"{network.spec.model} ({network.spec.engine}, {network.spec.precision})")
        try:
            _check_network(network, config, store, from_run)
        except BaseException:
            network.release()  # its local copies of remote weights
            raise
    return RunPlan(config=config, command=command, output=output, state=state, previous=previous, found=found,
                   store=store, pca=pca, in_store=in_store, images_missing=images_missing, network=network)


def _check_k(command: Command, pca: PcaPlan, available: int) -> None:
    k = command.fit.k if command.fit is not None else None
    if k is not None and pca.fits and k > available:
        raise FruitlakeError(f"k={k} exceeds the {available} images in {redact(command.input)!r}")


def _check_network(network: RunNetwork, config: Config, store: Store, from_run: Manifest | None) -> None:
    """The weights are those of --from-run or of OUTPUT's store, and load into the network (checked only when
    neither vouches for them), before anything is written."""
    incremental = config.mode == "incremental"
    network.require(from_run.network.identity.weights_sha256 if from_run is not None else None,
                    store if incremental else None)
    if from_run is None and not (incremental and store.read_meta() is not None):
        network.check()


def _finished_run(spark: SparkSession, uri: str) -> Manifest:
    """The manifest of the `fruitlake run` whose network and PCA project-images applies."""
    source, shown = uri.rstrip("/"), redact(uri.rstrip("/"))
    if not fs.exists(spark, fs.join(source, MANIFEST)):
        raise FruitlakeError(f"--from-run {shown!r} is not the OUTPUT of a finished fruitlake run (no manifest)")
    manifest = Manifest.read(spark, fs.join(source, MANIFEST))
    if manifest.command != "run" or not fs.exists(spark, fs.join(source, PCA_MODEL)):
        raise FruitlakeError(
            f"--from-run {shown!r} holds no fitted PCA ({PCA_MODEL}/): give the OUTPUT of `fruitlake run`"
        )
    return manifest


def _network(spark: SparkSession, command: Command, config: Config, from_run: Manifest | None,
             cache: Path | None) -> RunNetwork:
    """The run's network: as configured, or for project-images the one the run in --from-run used."""
    if command.network is not None:
        assert command.weights is not None  # a run's weights default to $FRUITLAKE_WEIGHTS
        return RunNetwork(spark, command.network, command.weights, command.onnx, cache)
    assert from_run is not None  # project-images: the network of the run it names
    used, identity = from_run.network, from_run.network.identity
    spec = EngineSpec(model=identity.model, image_size=identity.image_size, engine=used.engine,
                      precision=identity.precision, batch_size=config.batch_size, max_pixels=config.max_pixels)
    return RunNetwork(spark, spec, command.weights or used.weights, cache=cache)
