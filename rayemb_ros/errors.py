"""The errors a user can act on: bad input or files (a CT, a checkpoint, a bag, a parameter), or
a run that cannot go on for a stated reason. The command line shows one as a single line,
`rayemb <command>: error: ...`, with exit code 2; the node as one log line and a diagnostics
entry. Every other exception is a bug and keeps its traceback."""


class InputError(Exception):
    """An error whose message is all the user needs (its first line is what is shown)."""
