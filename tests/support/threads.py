"""Writers on threads of their own while a reader, on another, runs again and again until they end."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable


def race(writers: Iterable[Callable[[], object]], read: Callable[[], object]) -> None:
    """Run each of ``writers`` once, each on its thread, with ``read`` repeated on one more.

    The reader starts first and stops once every writer has ended. The first exception
    any thread raised is raised here, after all of them are joined.
    """
    done = threading.Event()
    errors: list[BaseException] = []

    def reading() -> None:
        while not done.is_set():
            read()

    def guarded(work: Callable[[], object]) -> None:
        try:
            work()
        except BaseException as exc:
            errors.append(exc)

    reader = threading.Thread(target=guarded, args=(reading,))
    threads = [threading.Thread(target=guarded, args=(writer,)) for writer in writers]
    reader.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    reader.join()
    if errors:
        raise errors[0]
