"""The same Memory against a Chroma server (HttpClient), started here on a loopback port."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from memagent import Memory, MemoryConfig
from tests.conftest import exchange


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def chroma_url(tmp_path: Path) -> Iterator[str]:
    executable = shutil.which("chroma") or str(Path(sys.executable).with_name("chroma"))
    if not Path(executable).exists():
        pytest.fail("the `chroma` command that ships with chromadb is missing")
    port = free_port()
    server = subprocess.Popen(
        [executable, "run", "--path", str(tmp_path / "server"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # bounded wait for the server to listen
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        else:
            pytest.fail("chroma server did not start within 60 s")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


# chromadb's HttpClient offers no close(); its sockets are reclaimed by the garbage collector
@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_memory_on_a_chroma_server_keeps_users_apart(chroma_url: str, tmp_path: Path, embedder) -> None:
    config = MemoryConfig(store={"url": chroma_url}, embedder={"cache_path": tmp_path / "cache.sqlite"})
    memory = Memory(config, embedder=embedder)
    memory.add(exchange("I adopted a greyhound called Pixel"), user_id="ana", session_id="s1")
    memory.add(exchange("My locker code is 4417"), user_id="bob", session_id="s1")
    (hit,) = memory.search("greyhound Pixel locker code 4417", user_id="ana", k=5)
    assert hit.record.user_id == "ana" and hit.why["lexical"] == 1
    assert memory.delete_all(user_id="bob") == 1
    # a second client on the same server sees the change (no state only one process can see)
    other = Memory(config, embedder=embedder)
    assert other.get_all(user_id="bob") == [] and len(other.get_all(user_id="ana")) == 1
