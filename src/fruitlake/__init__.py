"""fruitlake: fruit photos -> CNN features -> PCA, on local Spark or a cluster."""

__version__ = "0.1.0"


class FruitlakeError(ValueError):
    """A whole-run problem (bad option, missing input, unusable weights): reported before work is lost.

    Its message is redacted on creation: a password or signed query in a URI never reaches a log or a user.
    """

    def __init__(self, message: str) -> None:
        from fruitlake.redaction import redact

        super().__init__(redact(message))
