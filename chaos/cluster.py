"""One private backend (Redis or PostgreSQL) and N ``itemrooms serve`` processes sharing
it: what the faults act on. The kit's clients reach every process, as through a load
balancer."""

import secrets
import tempfile
from pathlib import Path

from chaos.netns import Namespace, Namespaces
from chaos.options import Options
from chaos.postgres_server import PrivatePostgres
from chaos.processes import ServerProcess
from chaos.redis_server import PrivateRedis, free_port


class Cluster:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.tag = secrets.token_hex(2)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"itemrooms-chaos-{self.tag}-"))
        self.namespaces = Namespaces(self.tag, options.processes) if options.netns else None
        self.spaces: list[Namespace] = []
        self.redis: PrivateRedis | None = None  # with --backend redis
        self.postgres: PrivatePostgres | None = None  # with --backend postgres
        self.processes: list[ServerProcess] = []

    async def start(self) -> None:
        if self.namespaces is not None:
            self.spaces = self.namespaces.create()
        binds = tuple(space.backend_host_ip for space in self.spaces)
        if self.options.backend == "postgres":
            self.postgres = PrivatePostgres(self.workdir, binds)
            await self.postgres.start()
            url, namespace = self.postgres.url, f"chaos_{self.tag}"
        else:
            self.redis = PrivateRedis(self.options.redis_server, self.workdir, binds)
            await self.redis.start()
            url, namespace = self.redis.url, f"chaos-{self.tag}:"
        for k in range(self.options.processes):
            space = self.spaces[k] if self.spaces else None
            process = ServerProcess(
                index=k,
                itemrooms=self.options.itemrooms,
                env=self.options.server_env(
                    url(space.backend_host_ip if space else "127.0.0.1"), namespace
                ),
                port=free_port(),
                workdir=self.workdir,
                host=space.client_ip if space else "127.0.0.1",
                netns=space.name if space else None,
            )
            self.processes.append(process)
        for process in self.processes:
            await process.start()

    def stop(self) -> None:
        for process in self.processes:
            process.stop()
        if self.redis is not None:
            self.redis.kill()
        if self.postgres is not None:
            self.postgres.kill()
        if self.namespaces is not None:
            self.namespaces.remove()

    def space_of(self, process: ServerProcess) -> Namespace:
        assert self.spaces, "the partition fault needs --netns"
        return self.spaces[process.index]
