"""Errors whose message is written for the user: the CLI prints them as they are, without a traceback."""


class RlsysError(Exception):
    """Base of every error that names a problem in the user's input and how to fix it."""


class ConfigError(RlsysError, ValueError):
    """A config problem found before anything starts; the message is meant to be shown as it is."""


class RewardConfigError(ConfigError):
    """A reward term in the config cannot be resolved (bad type, rule name, path or function)."""


class UserCodeError(ConfigError):
    """User code named by the config (a reward function's or an environment's file or module) cannot be loaded."""


class DataError(RlsysError, ValueError):
    """A data file, row or column that cannot be used."""


class DataExhausted(DataError):
    """Every source of a streamed job has been read as many epochs as it allows: the run ends there."""


class ModelError(RlsysError, ValueError):
    """A model or tokenizer folder that cannot be used."""


class ClusterError(RlsysError, RuntimeError):
    """The cluster cannot host what the config asks for."""


class RewardError(RlsysError, RuntimeError):
    """A reward function misbehaved while scoring a batch (raised, wrong shape, NaN, non-numeric)."""


class EvaluationError(RlsysError, RuntimeError):
    """Evaluation failed; what training produced is saved (the message says where)."""


class Preempted(RlsysError):
    """SIGTERM stopped the run after the step in flight, which was saved (the message says where)."""
