"""dd-build: a Make-style, declarative build tool for multi-stage synthetic-data pipelines."""

__version__ = "0.1.0"
