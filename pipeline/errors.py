"""The one error type for bad user input: the CLI prints it on one line and exits 2."""


class InputError(Exception):
    """Bad input from the user (config, data file, recipe). The message names the field or file."""

    exit_code = 2
