"""What of the framework's the gc's collector finds in reference cycles after some calls."""

from __future__ import annotations

import gc
import types
from collections.abc import Awaitable, Callable
from pathlib import Path

__all__ = ["our_garbage"]

APP = str(Path(__file__).resolve().parents[2] / "app")


def _ours(obj: object) -> str | None:
    """What ``obj`` is, when it is the framework's: a frame of app/, or an instance of a type of app/."""
    if isinstance(obj, types.FrameType):
        code = obj.f_code
        return f"frame {code.co_name} ({code.co_filename})" if code.co_filename.startswith(APP) else None
    module = type(obj).__module__
    return f"{type(obj).__name__} ({module})" if module == "app" or module.startswith("app.") else None


async def our_garbage(calls: Callable[[], Awaitable[None]]) -> list[str]:
    """What of ours the collector finds in cycles after ``calls()``, with the gc off meanwhile."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        await calls()
        gc.collect()
        return sorted({found for obj in gc.garbage if (found := _ours(obj)) is not None})
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
