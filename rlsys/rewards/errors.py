"""Exceptions for reward configuration (caught at startup) and reward execution (caught mid-run)."""
from rlsys.errors import RlsysError


class RewardConfigError(RlsysError, ValueError):
    """A reward spec in the config cannot be resolved (bad type, rule name, path or function)."""


class RewardError(RlsysError, RuntimeError):
    """A reward function misbehaved while scoring a batch (raised, wrong shape, NaN, non-numeric)."""
