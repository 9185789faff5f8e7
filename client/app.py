"""The Flower ClientApp entry point (`clientapp = "client.app:app"`): fedcompress's client, defined in the library."""

from fedcompress.flower.clientapp import app

__all__ = ["app"]
