"""Errors raised while building model files, bundles and test images.

    MLCloudError
    └── ConfigError
        └── ModelBuildError          a source is unreadable or a build step failed
            ├── ChecksumMismatch     a built or imported file has the wrong sha256/size
            ├── VerificationError    a built model does not classify as it must
            ├── ConversionError      a model could not become ONNX, or the ONNX answers unlike it
            └── MissingExtra         converting needs an optional package: the message says which pip install

They live beside the code that raises them; ``mlcloud.errors`` registers them by kind.
"""

from __future__ import annotations

from mlcloud.errors import ConfigError


class ModelBuildError(ConfigError):
    """A model source could not be read or a build step failed."""


class ChecksumMismatch(ModelBuildError):
    """A file's sha256 or size is not the expected one."""


class VerificationError(ModelBuildError):
    """A built model gave answers it must not give (wrong top-1, engines disagree)."""


class ConversionError(ModelBuildError):
    """A model could not be converted to ONNX, or the converted model answers unlike the original."""


class MissingExtra(ModelBuildError):
    """Converting this kind of model needs packages of an extra that is not installed."""
