"""Errors raised for bad user input; the CLI prints them as one line and exits with code 2."""


class LatcpbInputError(ValueError):
    """Input that cannot be backmapped (file, frame, residue or option at fault named in the message)."""
