"""The one exception type that the CLI turns into a single clear line and a non-zero exit."""


class UserError(Exception):
    """Bad input or a state the user can fix. The message says what is wrong and what to do."""

    exit_code = 2
