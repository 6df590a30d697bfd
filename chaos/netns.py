"""Network namespaces for the partition fault: each server process in a namespace of
its own, reaching the backend (Redis or PostgreSQL) over one veth pair and reached by
the kit over another.

Per process k (``b`` is this run's second octet, chosen so it collides with no
address on the machine):

    backend link  host 10.b.(2k).1/30   <->  namespace 10.b.(2k).2/30
    client link   host 10.b.(2k+1).1/30 <->  namespace 10.b.(2k+1).2/30

The backend also binds the host ends of the backend links. A partition sets the host
end of one backend link down: that process and the backend stop hearing each other
(packets are dropped, nothing is refused), while the kit's clients still reach the
process over its client link, exactly as a client behind a load balancer would. Needs root and
iproute2; every namespace and link is removed at the end of the run.
"""

import ipaddress
import os
import random
import shutil
import subprocess
from dataclasses import dataclass


def _ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


@dataclass(frozen=True)
class Namespace:
    name: str
    backend_host_end: str  # the interface a partition sets down
    backend_host_ip: str  # where the process reaches the backend
    client_ip: str  # where the kit reaches the process


class Namespaces:
    def __init__(self, tag: str, count: int) -> None:
        self.tag = tag
        self.count = count
        self.octet = self._free_octet()
        self.spaces: list[Namespace] = []

    @staticmethod
    def available() -> str | None:
        """Why namespaces cannot be used here, or None when they can."""
        if shutil.which("ip") is None:
            return "iproute2 (ip) is not installed"
        probe = f"itemrooms-chaos-probe-{os.getpid()}"
        try:
            _ip("netns", "add", probe)
            _ip("netns", "del", probe)
        except (RuntimeError, OSError) as exc:
            return f"cannot create a network namespace ({exc}); it needs root"
        return None

    @staticmethod
    def _free_octet() -> int:
        used = {
            ipaddress.ip_interface(word).ip
            for line in _ip("-o", "-4", "addr", "show").splitlines()
            for word in line.split()
            if "/" in word and word[0].isdigit()
        }
        taken = {int(str(ip).split(".")[1]) for ip in used if str(ip).startswith("10.")}
        choices = [octet for octet in range(200, 250) if octet not in taken]
        if not choices:
            raise RuntimeError("no free 10.x.0.0/16 for the namespaces")
        return random.choice(choices)

    def create(self) -> list[Namespace]:
        for k in range(self.count):
            self.spaces.append(self._create_one(k))
        return self.spaces

    def _create_one(self, k: int) -> Namespace:
        name = f"itemrooms-chaos-{self.tag}-{k}"
        _ip("netns", "add", name)
        _ip("-n", name, "link", "set", "lo", "up")
        ends = {}
        for link, third in (("r", 2 * k), ("c", 2 * k + 1)):
            host, inside = f"icr{self.tag}{k}{link}h", f"icr{self.tag}{k}{link}n"
            _ip("link", "add", host, "type", "veth", "peer", "name", inside)
            _ip("link", "set", inside, "netns", name)
            _ip("addr", "add", f"10.{self.octet}.{third}.1/30", "dev", host)
            _ip("-n", name, "addr", "add", f"10.{self.octet}.{third}.2/30", "dev", inside)
            _ip("link", "set", host, "up")
            _ip("-n", name, "link", "set", inside, "up")
            ends[link] = host
        return Namespace(
            name=name,
            backend_host_end=ends["r"],
            backend_host_ip=f"10.{self.octet}.{2 * k}.1",
            client_ip=f"10.{self.octet}.{2 * k + 1}.2",
        )

    @staticmethod
    def cut(space: Namespace) -> None:
        _ip("link", "set", space.backend_host_end, "down")

    @staticmethod
    def heal(space: Namespace) -> None:
        _ip("link", "set", space.backend_host_end, "up")

    def remove(self) -> None:
        """Deleting a namespace deletes its veth ends, and with them the host ends."""
        for space in self.spaces:
            subprocess.run(["ip", "netns", "del", space.name], capture_output=True, timeout=10)
        self.spaces = []
