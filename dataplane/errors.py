"""The data plane's refusals, written for the customer."""


class AppSuspended(Exception):
    """The app's data cannot be used now; ``reason`` is written for the customer.

    ``cause`` is a stable machine name: the connection state (``revoked`` …),
    ``app-suspended``, or an AWS cause (``key-disabled`` …). ``transient`` is true when
    retrying later may succeed without anyone acting (AWS unreachable or throttling).
    """

    transient = False

    def __init__(self, reason: str, *, cause: str = "suspended"):
        super().__init__(reason)
        self.reason = reason
        self.cause = cause


class KeysUnavailable(AppSuspended):
    """AWS KMS did not answer in any region of the location: not a revocation; retry later."""

    transient = True


class NotByokApp(ValueError):
    """The app instance uses vendor-managed keys: its data does not go through this module."""
