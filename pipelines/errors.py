"""Errors a user can cause, each with the exit status of interfaces.md.

Anything raised as a ``ZerocertError`` is printed as one clear line, never a traceback.
"""


class ZerocertError(Exception):
    """A failure the user can act on; ``exit_status`` is what the CLI returns."""

    exit_status = 1


class UsageError(ZerocertError):
    """Bad usage or configuration: nothing was written."""

    exit_status = 2


class DeliveryRejected(ZerocertError):
    """A whole delivery cannot be read (encoding, schema drift, empty, not a table)."""

    exit_status = 3


class ValidationFailed(ZerocertError):
    """A source failed its table-level expectations: nothing is published."""

    exit_status = 3


class NotFound(ZerocertError):
    """A lookup found nothing: a clean answer, not a crash."""

    exit_status = 1
