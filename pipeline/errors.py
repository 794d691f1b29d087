"""Errors a user meets, reported by the ``raydistill`` command as one line naming what is wrong."""


class ConfigError(ValueError):
    """A config value is missing, unknown, of the wrong type or out of range."""
