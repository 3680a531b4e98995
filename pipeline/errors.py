"""The errors the CLI prints on one line: bad user input (exit 2) and a stage that failed (exit 1)."""


class InputError(Exception):
    """Bad input from the user (config, data file, recipe). The message names the field or file."""

    exit_code = 2


class StageFailed(Exception):
    """A stage of a run failed (after Ray Train's retries, where it trains). The message names the
    stage and the cause in one line; the run record and the worker logs keep the rest."""

    exit_code = 1
