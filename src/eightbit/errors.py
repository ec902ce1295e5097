"""The one error type users see: bad input, described in one line that names the fix."""


class InputError(ValueError):
    """Raised for input the tool refuses (bad file, bad data, bad option).

    The message is a single line; the command line prints it and exits with status 2.
    """


class DataWarning(UserWarning):
    """Input the tool takes but that cannot mean what was likely meant (calibration samples that are all the
    same value). The command line prints it as one line and goes on."""


def first_line(error: BaseException, default: str | None = None) -> str:
    """The first line of an error's message, or `default` (the error's type name) where it has none: what a
    one-line refusal quotes of an exception raised by another library."""
    text = str(error).strip()
    return text.splitlines()[0] if text else default or type(error).__name__
