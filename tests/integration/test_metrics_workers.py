"""One scrape sums every worker: with ``--workers 2`` the workers share one port, so a
scrape reaches either; ``itemrooms serve`` sets up prometheus-client's multiprocess
mode and whichever worker answers reports the totals of both. (Before, eight scrapes in
a row alternated between two workers' numbers.)"""

import json
from pathlib import Path

import httpx
from prometheus_client.mmap_dict import MmapedDict

from tests.conftest import PRESENCE_TTL_S, Mint, server_env
from tests.support.client import join
from tests.support.server import ServerProcess

MAX_JOINS = 200
SCRAPES = 8


def worker_metrics_dir(server: ServerProcess) -> Path:
    """The directory serve gave its workers, read from a worker's environment."""
    assert server.process is not None
    pid = server.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for child in children:
        environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        for entry in environ:
            if entry.startswith(b"PROMETHEUS_MULTIPROC_DIR="):
                return Path(entry.split(b"=", 1)[1].decode())
    raise AssertionError(f"no worker of {pid} has PROMETHEUS_MULTIPROC_DIR: {children}")


def joins_by_worker(directory: Path) -> dict[str, float]:
    joins = {}
    for path in directory.glob("counter_*.db"):
        for key, value, *_ in MmapedDict.read_all_values_from_file(str(path)):
            if json.loads(key)[1] == "itemrooms_joins_total":
                joins[path.stem.split("_", 1)[1]] = value
    return joins


async def test_one_scrape_sums_both_workers(
    tmp_path: Path, redis_prefix: str, mint: Mint, item: str
) -> None:
    env = server_env(backend="redis", redis_prefix=redis_prefix, presence_ttl_s=PRESENCE_TTL_S)
    server = ServerProcess(env, cwd=tmp_path, workers=2).start()
    open_rooms = []
    try:
        directory = worker_metrics_dir(server)
        # Join until both workers have taken some (the kernel picks the worker).
        while len([n for n in joins_by_worker(directory).values() if n > 0]) < 2:
            assert len(open_rooms) < MAX_JOINS, joins_by_worker(directory)
            ws, _ = await join(server, item, mint(f"u{len(open_rooms)}"))
            open_rooms.append(ws)
        total = len(open_rooms)
        assert sum(joins_by_worker(directory).values()) == total
        async with httpx.AsyncClient(base_url=server.http_url, timeout=5) as http:
            for _ in range(SCRAPES):  # each answered by either worker: always the sum
                text = (await http.get("/metrics")).text
                assert f"itemrooms_joins_total {float(total)}" in text, text
                assert f"itemrooms_connections {float(total)}" in text, text
    finally:
        for ws in open_rooms:
            await ws.close()
        server.stop()
    assert not directory.exists()  # serve cleans up what it set up
