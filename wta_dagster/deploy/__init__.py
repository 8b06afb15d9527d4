"""Example deployments that run the training partitions on an existing distributed engine."""
