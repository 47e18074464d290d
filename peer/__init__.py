"""peer: serverless, end-to-end encrypted sync of append-only logs between your devices."""

__version__ = "0.1.0"
