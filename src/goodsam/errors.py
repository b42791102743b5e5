"""User-facing errors: the CLI prints them as one line and exits non-zero."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when the message is empty): what a
    one-line error quotes of a library's multi-line one."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class GoodSAMError(Exception):
    """An error caused by the user's input or environment, with a message saying how to fix it."""


class AssetError(GoodSAMError):
    """A weight or data file is missing, corrupt or of the wrong kind."""


class ImageError(GoodSAMError):
    """An image cannot be read or is not an 8-bit RGB image."""


class ConfigError(GoodSAMError):
    """A configuration, model name or option is invalid."""


class BatchError(GoodSAMError):
    """Some inputs of a batch command failed and every other one was done.

    ``failures``: ``(input, reason)`` per failed input, in input order; ``result``: what the command
    returns for the inputs that were done (its summary or list of results)."""

    def __init__(self, what: str, total: int, failures: list, result=None):
        self.failures, self.result, self.total = list(failures), result, total
        super().__init__(f"{len(self.failures)} of {total} {what} failed (the others were done): "
                         + "; ".join(f"{path}: {reason}" for path, reason in self.failures))
