"""File discovery on real files: edits, atomic renames and Kubernetes symlink swaps are all seen."""

from __future__ import annotations

import asyncio
import json
import os

import pytest
from prometheus_client import CollectorRegistry

from app.discovery import DiscoveryError, DiscoveryRunner, FileSource, parse_discovery
from tests.support.discovery import Recorder, eventually, updates

BASE = "http://ignored:1/api/v1/"
A = "http://127.0.0.1:9001/api/v1/"
B = "http://127.0.0.1:9002/api/v1/"
C = "http://127.0.0.1:9003/api/v1/"


def document(*instances: str) -> str:
    return json.dumps({"instances": list(instances)})


def write_atomically(path, text: str) -> None:
    """What a careful writer does: a temporary file in the same directory, renamed over the old one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.fixture
def registry():
    return CollectorRegistry()


@pytest.fixture
async def watch(tmp_path, registry):
    """A runner on tmp_path/instances.json (write the file first); closed at teardown, leaving no task."""
    made: list[DiscoveryRunner] = []
    before = asyncio.all_tasks()

    def start(path=None) -> tuple[DiscoveryRunner, Recorder]:
        path = path or tmp_path / "instances.json"
        applied = Recorder()
        runner = DiscoveryRunner(
            parse_discovery(path.as_uri(), BASE), applied, service_name="ae", registry=registry
        )
        runner.start()
        made.append(runner)
        return runner, applied

    yield start
    for runner in made:
        await runner.aclose()
    assert asyncio.all_tasks() - before - {asyncio.current_task()} == set(), "a task leaked"


def rejected(registry) -> float:
    return updates(registry, "ae", "file", "rejected")


async def test_the_file_is_read_at_once(tmp_path, registry) -> None:
    """initial() reads the file synchronously: the runner has the set before its task even starts."""
    (tmp_path / "instances.json").write_text(document("http://127.0.0.1:9001/api/v1", B))
    source = parse_discovery((tmp_path / "instances.json").as_uri(), BASE)
    assert source.initial() == ("http://127.0.0.1:9001/api/v1", B)
    runner = DiscoveryRunner(source, Recorder(), service_name="ae", registry=registry)
    assert runner.instances == (A, B)
    assert await runner.wait_ready(0) is True


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "does not exist"),
        ("{", "not valid JSON"),
        ("[]", "expected"),
        ('{"instances": "http://x/"}', "expected"),
        ('{"instances": [1]}', "expected"),
        ("\udcff", "not valid JSON"),
    ],
)
def test_a_bad_file_is_a_discovery_error_naming_it(tmp_path, content, reason) -> None:
    """Missing, not JSON, or the wrong shape: initial() raises a DiscoveryError that names the file and the problem."""
    path = tmp_path / "instances.json"
    if content is not None:
        path.write_bytes(content.encode("utf-8", "surrogateescape"))
    with pytest.raises(DiscoveryError) as raised:
        FileSource(path).initial()
    assert str(path) in str(raised.value)
    assert reason in str(raised.value)


async def test_an_added_then_removed_instance_is_applied(tmp_path, registry, watch) -> None:
    """Writing the file in place is seen: an instance added, then one removed."""
    path = tmp_path / "instances.json"
    path.write_text(document(A))
    runner, applied = watch()
    path.write_text(document(A, B))
    await eventually(lambda: runner.instances == (A, B))
    path.write_text(document(B))
    await eventually(lambda: runner.instances == (B,))
    assert applied.applied == [(A,), (A, B), (B,)]
    assert rejected(registry) == 0


async def test_an_empty_list_or_bad_json_keeps_the_last_good_set(tmp_path, registry, watch) -> None:
    """An empty list, invalid JSON, and a deleted file are each rejected; the set stays, and a good file is applied again."""
    path = tmp_path / "instances.json"
    path.write_text(document(A, B))
    runner, applied = watch()
    path.write_text(document())
    await eventually(lambda: rejected(registry) == 1)
    path.write_text('{"instances": [')
    await eventually(lambda: rejected(registry) == 2)
    path.unlink()
    await eventually(lambda: rejected(registry) == 3)
    assert "does not exist" in (runner.last_error or "")
    assert runner.instances == (A, B)
    assert applied.applied == [(A, B)]
    write_atomically(path, document(C))
    await eventually(lambda: runner.instances == (C,))
    assert runner.last_error is None


async def test_a_half_written_file_is_rejected_then_the_completed_one_applied(
    tmp_path, registry, watch
) -> None:
    """A writer caught half way leaves invalid JSON: rejected, set kept; the finished write is applied."""
    path = tmp_path / "instances.json"
    path.write_text(document(A))
    runner, applied = watch()
    full = document(A, B, C)
    with path.open("w") as f:
        f.write(full[: len(full) // 2])
        f.flush()
        await eventually(lambda: rejected(registry) == 1)
        assert runner.instances == (A,)
        f.write(full[len(full) // 2 :])
    await eventually(lambda: runner.instances == (A, B, C))
    assert applied.applied == [(A,), (A, B, C)]


async def test_an_atomic_rename_is_seen(tmp_path, watch) -> None:
    """An atomic rename (mv tmp instances.json) replaces the file's inode; watching the directory still sees it."""
    path = tmp_path / "instances.json"
    write_atomically(path, document(A))
    runner, applied = watch()
    write_atomically(path, document(B))
    await eventually(lambda: runner.instances == (B,))
    write_atomically(path, document(B, C))
    await eventually(lambda: runner.instances == (B, C))
    assert applied.applied == [(A,), (B,), (B, C)]  # each rename seen once, in order


async def test_a_kubernetes_symlink_swap_is_seen(tmp_path, watch) -> None:
    """A ConfigMap volume: instances.json -> ..data/instances.json, and ..data is swapped by renaming a new symlink over it."""
    first = tmp_path / "..2026_01_01_00_00_00.1"
    first.mkdir()
    (first / "instances.json").write_text(document(A))
    (tmp_path / "..data").symlink_to(first.name)
    path = tmp_path / "instances.json"
    path.symlink_to("..data/instances.json")
    runner, applied = watch(path)
    assert runner.instances == (A,)

    second = tmp_path / "..2026_01_01_00_01_00.2"
    second.mkdir()
    (second / "instances.json").write_text(document(B, C))
    (tmp_path / "..data_tmp").symlink_to(second.name)
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    (first / "instances.json").unlink()
    first.rmdir()
    await eventually(lambda: runner.instances == (B, C))
    assert applied.applied == [(A,), (B, C)]


async def test_a_burst_of_writes_gives_at_most_two_applies_and_the_final_set(
    tmp_path, registry, watch
) -> None:
    """Two writes in quick succession are debounced: one or two applies, and the set ends as the last write left it."""
    path = tmp_path / "instances.json"
    path.write_text(document(A))
    runner, applied = watch()
    await asyncio.sleep(0.1)  # the watcher is running
    write_atomically(path, document(A, B))
    write_atomically(path, document(C))
    await eventually(lambda: runner.instances == (C,))
    await asyncio.sleep(0.3)  # nothing more arrives
    assert 2 <= len(applied.applied) <= 3
    assert applied.last == (C,)
    assert rejected(registry) == 0


async def test_a_file_missing_at_start_is_picked_up_when_it_appears(tmp_path, registry, watch) -> None:
    """No file yet: rejected and not ready; once it is written, the runner applies it."""
    path = tmp_path / "instances.json"
    runner, applied = watch()
    assert runner.instances == ()
    assert rejected(registry) == 1
    write_atomically(path, document(A))
    assert await runner.wait_ready(5) is True
    assert applied.applied == [(A,)]


async def test_unchanged_content_is_not_applied_again(tmp_path, registry, watch) -> None:
    """Rewriting the same bytes, or touching another file in the directory, yields nothing new."""
    path = tmp_path / "instances.json"
    path.write_text(document(A))
    runner, applied = watch()
    await asyncio.sleep(0.1)
    path.write_text(document(A))
    (tmp_path / "other.txt").write_text("noise")
    path.write_text(document(B))
    await eventually(lambda: runner.instances == (B,))
    assert applied.applied == [(A,), (B,)]
    assert updates(registry, "ae", "file", "unchanged") <= 1  # the first yield repeats what initial() read
