"""The config store watching a real file: edits, renames, symlink swaps, half-written files, bursts and SIGHUP."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import pytest
from prometheus_client import CollectorRegistry

from settings import RELOAD_RESULTS, ConfigStore, install_reload_signal, remove_reload_signal
from tests.support.discovery import eventually

AE_KEY = "ae-watch-secret-0123456789"
BASE = f"""\
APP_LOG_JSON=true
APP_ANALYSIS_ENGINE__BASE_URL=http://127.0.0.1:8001/api/v1
APP_ANALYSIS_ENGINE__TIMEOUT_SECONDS=1.0
APP_ANALYSIS_ENGINE__API_KEY={AE_KEY}
APP_ML_WORKBENCH__BASE_URL=http://127.0.0.1:8002/api/v1
"""
#: Long enough after the last event for any late reload to have happened.
QUIET = 0.4
#: For the tests of a writer that pauses: the store waits this long for the file to hold
#: still, and the writer pauses for PAUSE, longer than watchfiles groups a burst (so the
#: watcher sees the first part alone) and well within SETTLE.
SETTLE = 0.2
PAUSE = 0.06


def with_timeout(seconds: float) -> str:
    return BASE.replace("TIMEOUT_SECONDS=1.0", f"TIMEOUT_SECONDS={seconds}")


def write_atomically(path, text: str) -> None:
    """A careful writer: a temporary file in the same directory, renamed over the old one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No APP_ or alias variables leak in from the machine running the tests."""
    for name in list(os.environ):
        if name.upper().startswith(("APP_", "ANALYSIS_ENGINE_", "ML_WORKBENCH_")):
            monkeypatch.delenv(name)


@pytest.fixture
def registry():
    return CollectorRegistry()


@pytest.fixture
async def watched(tmp_path, registry, caplog):
    """A store watching tmp_path/app.env (or the path given), started; stopped at teardown, leaving no task."""
    caplog.set_level(logging.DEBUG, "settings.store")
    made: list[ConfigStore] = []
    before = asyncio.all_tasks()

    async def start(path=None, settle: float = 0.05) -> ConfigStore:
        path = path or tmp_path / "app.env"
        if not path.exists():
            path.write_text(BASE)
        store = ConfigStore("test", path=path, registry=registry, settle_seconds=settle)
        store.start()
        made.append(store)
        await asyncio.sleep(0.1)  # the watcher thread is running
        return store

    yield start
    for store in made:
        await store.aclose()
        assert not store.running
    assert asyncio.all_tasks() - before - {asyncio.current_task()} == set(), "a task leaked"
    for secret in (AE_KEY,):
        assert secret not in caplog.text


def counts(registry) -> dict[str, float]:
    return {
        r: registry.get_sample_value("config_reloads_total", {"result": r}) or 0.0 for r in RELOAD_RESULTS
    }


def only(result: str, times: int = 1) -> dict[str, float]:
    return {r: float(times) if r == result else 0.0 for r in RELOAD_RESULTS}


def timeout(store: ConfigStore) -> float:
    return store.settings.analysis_engine.timeout_seconds


async def test_an_edit_in_place_is_applied_once(tmp_path, registry, watched) -> None:
    """Writing the file in place: one reload, applied, version 2, the gauge moves."""
    store = await watched()
    (tmp_path / "app.env").write_text(with_timeout(2.5))
    await eventually(lambda: timeout(store) == 2.5)
    await asyncio.sleep(QUIET)
    assert counts(registry) == only("applied")
    assert store.current.version == 2
    assert registry.get_sample_value("service_client_config_version") == 2


@pytest.mark.parametrize(
    ("text", "names"),
    [
        (
            with_timeout(1.0).replace("TIMEOUT_SECONDS=1.0", "TIMEOUT_SECONDS=soon"),
            "analysis_engine.timeout_seconds",
        ),
        (
            BASE + "APP_ANALYSIS_ENGINE__CIRCUIT_BRAKER_FAILURE_THRESHOLD=3\n",
            "circuit_braker_failure_threshold",
        ),
        (BASE + "APP_BULKHEAD_MAX_CONCURRENT=3\n", "APP_BULKHEAD_MAX_CONCURRENT: not a setting"),
    ],
)
async def test_an_invalid_file_is_refused_once_then_a_good_one_applied(
    tmp_path, registry, caplog, watched, text, names
) -> None:
    """Bad type or unknown field: invalid once, logged once naming the field, version 1 stays; the fixed file applies."""
    store = await watched()
    path = tmp_path / "app.env"
    write_atomically(path, text)
    await eventually(lambda: counts(registry)["invalid"] == 1)
    await asyncio.sleep(QUIET)
    assert counts(registry) == only("invalid")
    assert store.current.version == 1
    assert names in store.last_result.message
    warnings = [
        r.getMessage() for r in caplog.records if r.name == "settings.store" and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1
    assert names in warnings[0]
    write_atomically(path, with_timeout(3.0))
    await eventually(lambda: timeout(store) == 3.0)
    assert store.current.version == 2
    assert counts(registry)["applied"] == 1


async def test_a_half_written_file_is_not_reloaded_until_it_holds_still(tmp_path, registry, watched) -> None:
    """A writer that truncates, writes half, pauses and writes the rest: one reload, of the whole file."""
    store = await watched(settle=SETTLE)
    full = with_timeout(2.0) + "APP_ANALYSIS_ENGINE__MAX_RETRIES=1\n"
    with (tmp_path / "app.env").open("w") as f:
        f.write(full[: len(full) // 2])
        f.flush()
        await asyncio.sleep(PAUSE)  # the loop runs: the watcher reads the half
        f.write(full[len(full) // 2 :])
    await eventually(lambda: store.settings.analysis_engine.max_retries == 1)
    await asyncio.sleep(QUIET)
    assert counts(registry) == only("applied")
    assert timeout(store) == 2.0


async def test_a_stalled_half_written_file_is_refused_then_the_whole_one_applied(
    tmp_path, registry, watched
) -> None:
    """A writer stalled half way through a line leaves an invalid file: refused, version 1 stays; the finished write applies."""
    store = await watched()
    full = with_timeout(2.0) + "APP_LOG_LEVEL=WARNING\n"
    cut = full.index("WARNING") + 3  # "APP_LOG_LEVEL=WAR": not a level
    level = logging.getLogger().level
    try:
        with (tmp_path / "app.env").open("w") as f:
            f.write(full[:cut])
            f.flush()
            await eventually(lambda: counts(registry)["invalid"] == 1)
            assert store.current.version == 1
            # Cut mid-line: refused for that, before its last value is even parsed.
            assert "does not end with a newline (half written?)" in store.last_result.message
            f.write(full[cut:])
        await eventually(lambda: store.current.version == 2)
        await asyncio.sleep(QUIET)
    finally:
        logging.getLogger().setLevel(level)
    assert counts(registry) == {**only("applied"), "invalid": 1.0}
    assert timeout(store) == 2.0


async def test_a_file_cut_at_a_line_end_or_inside_a_quote_is_refused(tmp_path, registry, watched) -> None:
    """A line python-dotenv cannot parse would be skipped (its setting back to the default): refused, by line number."""
    store = await watched()
    for text, line in (
        (BASE + "APP_ANALYSIS_ENGINE__TIMEOUT_SECONDS: 3\n", "line " + str(BASE.count("\n") + 1)),
        (BASE + 'APP_ANALYSIS_ENGINE__API_KEY="secret-cut-\n', "leaves a quote open"),
    ):
        before = counts(registry)["invalid"]
        write_atomically(tmp_path / "app.env", text)
        await eventually(lambda b=before: counts(registry)["invalid"] == b + 1)
        assert line in store.last_result.message
        assert "secret-cut" not in store.last_result.message
        assert store.current.version == 1


async def test_an_atomic_rename_is_applied_once(tmp_path, registry, watched) -> None:
    """An atomic rename (mv tmp app.env) replaces the inode; watching the directory sees it: one reload, applied."""
    path = tmp_path / "app.env"
    write_atomically(path, BASE)
    store = await watched(path)
    write_atomically(path, with_timeout(4.0))
    await eventually(lambda: timeout(store) == 4.0)
    await asyncio.sleep(QUIET)
    assert counts(registry) == only("applied")


async def test_a_kubernetes_symlink_swap_is_applied_once(tmp_path, registry, watched) -> None:
    """A ConfigMap volume: app.env -> ..data/app.env, ..data -> a timestamped dir, swapped by renaming a new symlink over it."""
    first = tmp_path / "..2026_01_01_00_00_00.1"
    first.mkdir()
    (first / "app.env").write_text(BASE)
    (tmp_path / "..data").symlink_to(first.name)
    path = tmp_path / "app.env"
    path.symlink_to("..data/app.env")
    store = await watched(path)
    assert timeout(store) == 1.0

    second = tmp_path / "..2026_01_01_00_01_00.2"
    second.mkdir()
    (second / "app.env").write_text(with_timeout(5.0))
    (tmp_path / "..data_tmp").symlink_to(second.name)
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    (first / "app.env").unlink()
    first.rmdir()
    await eventually(lambda: timeout(store) == 5.0)
    await asyncio.sleep(QUIET)
    assert counts(registry) == only("applied")
    assert store.current.source == path  # the name, not the timestamped target


async def test_two_writes_in_a_burst_give_one_reload_of_the_last(tmp_path, registry, watched) -> None:
    """Two writes in quick succession: one reload, applied, with what the second wrote."""
    store = await watched(settle=SETTLE)
    path = tmp_path / "app.env"
    write_atomically(path, with_timeout(2.0))
    await asyncio.sleep(PAUSE)
    write_atomically(path, with_timeout(3.0))
    await eventually(lambda: store.current.version > 1)
    await asyncio.sleep(QUIET)
    assert counts(registry) == only("applied")
    assert timeout(store) == 3.0


async def test_rewriting_the_same_bytes_reloads_nothing(tmp_path, registry, watched) -> None:
    """The same content written again, and another file touched in the directory: no reload at all."""
    store = await watched()
    (tmp_path / "app.env").write_text(BASE)
    (tmp_path / "other.txt").write_text("noise")
    await asyncio.sleep(QUIET)
    assert counts(registry) == only("applied", 0)
    assert store.current.version == 1


async def test_sighup_with_no_change_is_unchanged(tmp_path, registry, watched) -> None:
    """A real SIGHUP to this process, the handler installed: one reload, unchanged, version 1; a later change is applied."""
    store = await watched()
    assert install_reload_signal(store)
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        await eventually(lambda: store.last_result is not None)
        await asyncio.sleep(QUIET)
        assert counts(registry) == only("unchanged")
        assert (store.last_result.result, store.last_result.reason) == ("unchanged", "SIGHUP")
        assert store.current.version == 1
    finally:
        remove_reload_signal()


async def test_sighup_applies_a_change_without_the_watch(tmp_path, registry) -> None:
    """SIGHUP alone (no file watch running) reloads a changed file."""
    path = tmp_path / "app.env"
    path.write_text(BASE)
    store = ConfigStore("test", path=path, registry=registry)
    path.write_text(with_timeout(6.0))
    assert install_reload_signal(store)
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        await eventually(lambda: store.current.version == 2)
    finally:
        remove_reload_signal()
    assert counts(registry) == only("applied")
    assert timeout(store) == 6.0
