"""The one error type users see for bad input: it names the thing and what was expected."""


class ConfigError(ValueError):
    """A configuration value, name or path that fedcompress cannot use."""
