"""Every `rlsys JOB ...` command in the README composes into a valid config (so the README never rots)."""
import re
import shlex
from pathlib import Path

import pytest

from rlsys.config.compose import compose_job
from rlsys.config.jobs import JOBS
from rlsys.config.validate import to_typed
from rlsys.errors import ConfigError
from rlsys.launchers.cli import key_value_overrides

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_commands() -> list[list[str]]:
    commands = []
    for line in README.read_text().replace("\\\n", " ").splitlines():  # continued lines joined
        line = line.split(" #", 1)[0].strip()
        found = re.search(r"(?:^|\s|/)rlsys\s+(\S.*)$", line)
        if found and not line.startswith("$"):
            args = shlex.split(found.group(1))
            if args and args[0] in JOBS:
                commands.append(args)
    return commands


def test_readme_has_commands():
    assert len(readme_commands()) >= 10


@pytest.mark.parametrize("args", readme_commands(), ids=lambda a: " ".join(a)[:60])
def test_readme_command_composes(args):
    job, overrides = args[0], [o for o in key_value_overrides(args[1:]) if "," not in o.split("=", 1)[1] or "[" in o]
    try:
        to_typed(compose_job(job, overrides))
    except ConfigError as err:
        pytest.fail(f"`rlsys {' '.join(args)}`: {err}")


def test_readme_error_example_is_real():
    example = re.search(r"\$ rlsys (sft \S+)\n(rlsys sft: error: .+?)\.\.\.", README.read_text())
    assert example, "README shows a config error example"
    with pytest.raises(ConfigError) as caught:
        from rlsys.config.validate import check_overrides

        check_overrides(example.group(1).split()[1:])
    assert example.group(2).split("error: ", 1)[1].strip() in str(caught.value)
