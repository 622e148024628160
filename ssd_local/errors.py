"""Errors a user can fix. The CLI prints them on one line, without a traceback."""


class UserError(Exception):
    """A mistake in the user's input or environment; the message names the fix."""


class Cancelled(Exception):
    """Work stopped on request (Ctrl-C, a TUI cancel). The run stays resumable."""
