"""`python -m palrm ...` is the same as the `palrm` command."""

from palrm.cli import entrypoint

entrypoint()
