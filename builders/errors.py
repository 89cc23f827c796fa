"""Errors of the build.

BuildError            bad input to a build: the CLI prints its one line and exits with code 2
"""


class BuildError(Exception):
    """Bad input (file, column, option or output directory); nothing has been written."""
