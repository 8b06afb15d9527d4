"""Benchmarks of WTA's numerical kernels.

Each module measures one kernel and exposes `run(quick: bool = False) -> dict`, which
returns the measured figures, and `to_markdown(results) -> str`, which renders them.
"""
