"""The package version, written in this one place: pyproject reads it, ``cosmonapse.__version__`` is it."""

__version__ = "0.1.0"
