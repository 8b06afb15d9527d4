"""Audio decoding and log-mel features."""
