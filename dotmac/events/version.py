"""The release number, in one place for the package and its tracer scope."""

__version__ = "0.1.0"
