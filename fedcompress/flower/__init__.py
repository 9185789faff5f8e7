"""Thin adapters between the framework-agnostic core and Flower's Message API."""
