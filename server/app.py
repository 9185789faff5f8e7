"""The Flower ServerApp entry point (`serverapp = "server.app:app"`): fedcompress's server, defined in the library."""

from fedcompress.flower.serverapp import app

__all__ = ["app"]
