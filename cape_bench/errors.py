"""Error types with messages meant for the person at the terminal.

The CLI prints `str(error)` on one line and exits non-zero; a traceback is
shown only with `--debug`. So every message names the file, the record and the
fix, never just the symptom.
"""


class CapeBenchError(Exception):
    """Base of every error cape-bench raises on purpose."""


class DatasetError(CapeBenchError):
    """An annotation file, image or record that cannot be used as given."""


class ConfigError(CapeBenchError):
    """A config value, flag or name that does not fit."""


class RegistryError(ConfigError):
    """An unknown method, protocol, backbone or encoder name."""


class CheckpointError(CapeBenchError):
    """A checkpoint file that is missing, corrupt or belongs to another model."""


class WeightsMissingError(CheckpointError):
    """Pretrained weights that must be downloaded by hand before a real run."""


def reject_unknown_settings(given, allowed, what: str) -> None:
    """Raise ConfigError when `given` names a setting outside `allowed` (a typo must not pass silently).

    `what` leads the message, e.g. "method 'capex', config 'tiny': head".
    """
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ConfigError(f"{what} has no setting {', '.join(unknown)}; it takes {', '.join(sorted(allowed))}")
