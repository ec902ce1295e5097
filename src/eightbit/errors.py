"""The one error type users see: bad input, described in one line that names the fix."""


class InputError(ValueError):
    """Raised for input the tool refuses (bad file, bad data, bad option).

    The message is a single line; the command line prints it and exits with status 2.
    """
