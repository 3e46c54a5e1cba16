"""The palrm version, in a module of its own so that modules inside the package (core.persist, export,
serve) can import it without going through `palrm/__init__` (which imports them: an import cycle).
`palrm.__version__` re-exports it. Keep it equal to `version` in pyproject.toml."""

__version__ = "0.1.0"
