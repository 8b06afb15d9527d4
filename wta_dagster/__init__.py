"""Dagster code location of WTA; `defs` holds every asset, check and resource.

`defs` is imported on first access (a module `__getattr__`), so the `wta` command in
`wta_dagster.cli` runs its read commands without loading Dagster, torch and every asset.
Dagster finds `defs` through `dir()`, which lists it.
"""

__all__ = ["defs"]


def __getattr__(name: str):
    if name == "defs":
        from wta_dagster.definitions import defs

        globals()["defs"] = defs
        return defs
    raise AttributeError(f"module 'wta_dagster' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"defs"})
