"""User-facing errors: the CLI prints them as one line and exits non-zero."""


class GoodSAMError(Exception):
    """An error caused by the user's input or environment, with a message saying how to fix it."""


class AssetError(GoodSAMError):
    """A weight or data file is missing, corrupt or of the wrong kind."""


class ImageError(GoodSAMError):
    """An image cannot be read or is not an 8-bit RGB image."""


class ConfigError(GoodSAMError):
    """A configuration, model name or option is invalid."""
