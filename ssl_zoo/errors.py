"""User errors: reported as one line and exit code 2, never a traceback."""


class UserError(Exception):
    """Bad input from the user: say what is wrong and what is accepted."""
