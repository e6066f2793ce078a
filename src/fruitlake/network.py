"""The network of a run, resolved once on the driver: its engine spec, weights file and sha256, ONNX file.

From this one value derive the network's identity (`models.NetworkId`, which the store keeps), the manifest's
network fields (`NetworkFacts`) and what the workers get (the `EngineSpec`, broadcast with its payload). The
network itself is built only when the CNN has work: an incremental run with nothing new never pays for it.

Weights (and a prebuilt ONNX file) given as a URI, e.g. s3:// on EMR, are copied to a local folder through
Hadoop's FileSystem first: Keras and ONNX Runtime read local files only.
"""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import SparkSession

from fruitlake import FruitlakeError, fs
from fruitlake.engines import EngineSpec, broadcast, require_cpu
from fruitlake.manifest import NetworkFacts
from fruitlake.models import NETWORKS, NetworkId, Weights, load_network, weights_file
from fruitlake.onnx_cache import OnnxModel, onnx_model
from fruitlake.redaction import redact
from fruitlake.store import Store, require_meta


class RunNetwork:
    """The driver's resolver of a run's network: from it come (a) `identity`, (b) `broadcast()` and (c) `facts()`."""

    def __init__(self, spark: SparkSession, spec: EngineSpec, weights: str, onnx: str | None = None,
                 cache: Path | None = None) -> None:
        self.spec = spec  # as planned: no payload yet
        self._cache = cache  # where ONNX conversions are kept (Settings.cache); None: the environment's
        self._local = fs.LocalCopies(spark)
        self.weights: Weights = weights_file(spec.model, self._local.of(weights))
        self.source = weights if fs.is_remote(weights) else self.weights.path  # what the manifest shows
        self._onnx_uri = onnx
        self.onnx_file: str | None = None  # the ONNX file the engine was made from, if kept (not for keras)
        self._converted: OnnxModel | None = None
        self._broadcast: EngineSpec | None = None

    @property
    def identity(self) -> NetworkId:
        """What stored features must share with this run's to be mixed with them."""
        spec = self.spec
        return NetworkId(model=spec.model, image_size=spec.image_size, weights_sha256=self.weights.sha256,
                         precision=spec.precision)

    def facts(self, feature_engines: dict[str, int]) -> NetworkFacts:
        """The manifest's network fields; `feature_engines`: the published features by the engine that made them."""
        spec = self.spec
        return NetworkFacts(
            identity=self.identity, engine=spec.engine, feature_engines=feature_engines, weights=self.source,
            onnx_file=self.onnx_file, feature_dim=NETWORKS[spec.model].feature_dim, batch_size=spec.batch_size,
        )

    def require(self, expected_sha256: str | None, store: Store | None) -> None:
        """Refuse weights that differ from the run `project-images` applies, or from OUTPUT's stored features."""
        sha256 = self.weights.sha256
        if expected_sha256 is not None and sha256 != expected_sha256:
            raise FruitlakeError(
                f"weights file {redact(self.weights.path)!r} has sha256 {sha256[:16]}..., "
                f"but the run in --from-run was made with {expected_sha256[:16]}...: "
                "its PCA only fits features of the same weights (pass the same file with --weights)"
            )
        if store is not None:
            require_meta(store, self.identity)
        require_cpu(self.spec.precision)

    def check(self) -> None:
        """Load the weights into the network (a file of another architecture fails here). For ONNX engines a
        conversion cached for this checksum proves it already, and is what the run will use."""
        if self.spec.engine == "keras":
            load_network(self.spec.model, self.weights, self.spec.image_size)
        else:
            self._onnx()

    def _onnx(self) -> OnnxModel:
        """The ONNX model, converted (or read and checked) once per run."""
        if self._converted is None:
            spec = self.spec
            prebuilt = self._local.of(self._onnx_uri) if self._onnx_uri else None
            quantized = "int8" if spec.precision == "int8" else "fp32"  # bf16 is OpenVINO's, from fp32
            self._converted = onnx_model(spec.model, self.weights, spec.image_size, prebuilt, quantized, self._cache)
            cached = self._converted.onnx_path  # not written when the cache folder may not be written
            self.onnx_file = self._onnx_uri or (cached if Path(cached).is_file() else None)
        return self._converted

    def broadcast(self, spark: SparkSession) -> EngineSpec:
        """The spec for the workers, with its payload broadcast on first use."""
        if self._broadcast is None:
            spec = self.spec
            payload = load_network(spec.model, self.weights, spec.image_size).get_weights() \
                if spec.engine == "keras" else self._onnx().model_bytes
            self._broadcast = broadcast(spark, spec, payload)
            self._converted = None  # broadcast: the driver need not keep the bytes
        return self._broadcast

    def release(self) -> None:
        if self._broadcast is not None and self._broadcast.payload is not None:
            self._broadcast.payload.unpersist()
        self._local.remove()
