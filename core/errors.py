"""The one exception type for mistakes a user can make (bad file, bad path, bad value)."""


class StudioError(Exception):
    """A problem the user can fix; the message is written for them, not for a developer."""
