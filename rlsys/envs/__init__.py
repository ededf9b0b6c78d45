"""Environments for multi-turn RL: the protocol (base.py), tool calls (tools.py), the built-ins (calculator,
retry), rendering turns token-exactly (rendering.py) and the episode loop (episodes.py)."""
from rlsys.envs.base import Environment, StepResult
from rlsys.envs.tools import ToolEnvironment, parse_assistant

__all__ = ["Environment", "StepResult", "ToolEnvironment", "parse_assistant"]
