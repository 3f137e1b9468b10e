"""jobgate: one front door to many compute systems (GA4GH TES v1.1 + a native jobs API)."""

__version__ = "0.1.0"
