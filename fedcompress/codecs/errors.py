"""The one error a decoder raises (re-exported here for the codecs' own imports)."""

from fedcompress.errors import PayloadError

__all__ = ["PayloadError"]
