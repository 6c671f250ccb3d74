"""Nyckel: hosted image classification, trained automatically (see docs/services/nyckel.md)."""
