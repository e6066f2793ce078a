"""fruitlake: fruit photos -> CNN features -> PCA, on local Spark or a cluster."""

__version__ = "0.1.0"


class FruitlakeError(ValueError):
    """A whole-run problem (bad option, missing input, unusable weights): reported before work is lost."""
