"""fedcompress: federated learning on Flower with compressed updates and device-fitted models."""

__version__ = "0.1.0"
