"""Errors a user can cause; the CLI prints their message as one line and exits non-zero."""


class PrivgenError(Exception):
    """Base class: the message names the file, row, column or field and says what to do."""


class ConfigError(PrivgenError):
    """The pipeline config is invalid; raised before any work starts."""


class InputError(PrivgenError):
    """An input file or source cannot be read as a dataset."""


class ValidationFailed(PrivgenError):
    """The batch as a whole fails its data contract (too many bad rows, schema drift)."""


class PrivacyError(PrivgenError):
    """A privacy guarantee would not hold: leaked identifiers, unreachable ε, missing key."""


class RegistryError(PrivgenError):
    """A model name, version or alias does not exist, or a promotion gate refused it."""


class GenerationError(PrivgenError):
    """A model could not produce the requested records."""
