"""The exceptions the CLI turns into a single clear line and a non-zero exit."""


class UserError(Exception):
    """Bad input or a state the user can fix. The message says what is wrong and what to do."""

    exit_code = 2


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, a scheduler) turned into an exception while a command works, so that its
    cleanup runs as on Ctrl-C: no half-written files left behind. Training has its own handler:
    it saves a checkpoint and stops."""
