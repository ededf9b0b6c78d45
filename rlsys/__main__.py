"""`python -m rlsys JOB ...`: the same as the `rlsys` command."""
from rlsys.launchers.cli import main

main()
