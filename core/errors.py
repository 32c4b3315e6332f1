"""Errors that reach a person: each carries one line that names what is wrong."""


class FlywheelError(Exception):
    """Base class: the CLI prints ``str(err)`` on one line and exits non-zero, no traceback."""


class ConfigError(FlywheelError):
    """A setting is missing or invalid (unwritable home, production without a secret, ...)."""


class LakeError(FlywheelError):
    """The lake cannot be read or written (unreachable endpoint, bad credentials, missing key)."""


class ContractError(FlywheelError):
    """Data breaks the data contract."""
