"""Software-defined assets, one artifact per module."""
