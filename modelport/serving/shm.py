"""Triton's system shared memory extension: regions a client on the same host registers, then names in requests.

A region is ``byte_size`` bytes at ``offset`` of a POSIX shared memory object (``shm_open``'s ``/<key>``, which
Linux keeps as ``/dev/shm/<key>``), mapped with ``mmap`` when it is registered and unmapped when it is
unregistered or the server stops. An input that names a region is copied out of it while its request is decoded
(before the batcher: the client may rewrite the region as soon as it has its answer); an output that names one is
written into it when its response is encoded. Nothing here runs for requests that name no region.

The object's size is checked (``fstat``) before every read and write: a client that shrinks the object after
registering it gets an error, not a server killed by SIGBUS. Keys are names, never paths: a key with a ``/`` after
the leading one, ``..`` or NUL is refused, and the object is opened with ``O_NOFOLLOW``.

Messages and codes are Triton's (its ``shared_memory_manager.cc``), except that the two client mistakes Triton
answers with INTERNAL (a key that does not exist, an output region too small) are 400 / INVALID_ARGUMENT here.
"""

from __future__ import annotations

import functools
import ipaddress
import mmap
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from modelport.errors import (
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    RegionExistsError,
    UnimplementedError,
)

__all__ = ["SHM_ROOT", "Locator", "Region", "RegionStatus", "SharedMemory", "SharedTensor", "local_peer", "shm_path"]

SHM_ROOT = Path("/dev/shm")  # where Linux's shm_open keeps its objects
_NAME_MAX = 255


@dataclass(frozen=True)
class RegionStatus:
    """A registered region as Triton's status lists it."""

    name: str
    key: str
    offset: int
    byte_size: int


class Locator(Protocol):
    """What a request decoder asks of the regions: where a tensor lies (:meth:`SharedMemory.locate`)."""

    def locate(self, tensor: str, parameters: Any) -> SharedTensor | None: ...


def local_peer(peer: str | None) -> bool:
    """Whether a client is on the server's host: an HTTP client's host (None: a Unix socket) or a gRPC peer
    (``ipv4:127.0.0.1:PORT``, ``ipv6:[::1]:PORT``, ``unix:...``) on a loopback address."""
    if peer is None or peer.startswith(("unix:", "unix-abstract:")):
        return True
    kind, _, address = peer.partition(":")
    if kind in ("ipv4", "ipv6"):  # gRPC: the address and then its port
        address = address.rpartition(":")[0].strip("[]")
    else:
        address = peer.strip("[]")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address == "localhost"
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None  # a dual-stack socket's IPv4 client
    return (mapped or ip).is_loopback


def shm_path(key: str) -> Path:
    """The file of a POSIX shared memory name (``/name`` or ``name``); anything that is not one name is refused."""
    name = key[1:] if key.startswith("/") else key
    if not name or len(name) > _NAME_MAX or "/" in name or ".." in name or "\0" in name or name == ".":
        raise InvalidArgumentError(
            f"invalid shared memory key {key!r}: a POSIX shared memory name is '/' and then a name without "
            "'/', '..' or NUL"
        )
    return SHM_ROOT / name


class Region:
    """One registered region: its mapping (page-aligned, so it starts ``_skip`` bytes before the region) and the
    object's descriptor, kept open to check the object's size before each access."""

    def __init__(self, status: RegionStatus, fd: int, mapping: mmap.mmap, skip: int) -> None:
        self.status = status
        self._fd, self._map, self._skip = fd, mapping, skip

    @property
    def name(self) -> str:
        """The name the client registered it by."""
        return self.status.name

    def read(self, offset: int, size: int) -> bytes:
        """A copy of ``size`` bytes at ``offset`` of the region."""
        start = self._check(offset, size)
        return self._map[start : start + size]

    def write(self, offset: int, data: bytes) -> None:
        """Write ``data`` at ``offset`` of the region."""
        start = self._check(offset, len(data))
        self._map[start : start + len(data)] = data

    def close(self) -> None:
        """Unmap the region and close the object (requests that still hold it then fail cleanly)."""
        if not self._map.closed:
            self._map.close()
            os.close(self._fd)

    def _check(self, offset: int, size: int) -> int:
        if self._map.closed:
            raise NotFoundError(f"Unable to find shared memory region: '{self.name}' (it was unregistered)")
        end = self.status.offset + offset + size
        if os.fstat(self._fd).st_size < end:  # touching pages past the object's end would be SIGBUS
            raise InvalidArgumentError(
                f"shared memory region '{self.name}': the object '{self.status.key}' is now smaller than the "
                f"{end} bytes the request needs"
            )
        return self._skip + offset


@dataclass(frozen=True)
class SharedTensor:
    """Where one tensor of a request lies: ``byte_size`` bytes at ``offset`` of a registered region."""

    region: Region
    offset: int
    byte_size: int

    def read(self) -> bytes:
        """The tensor's bytes, copied out of the region."""
        return self.region.read(self.offset, self.byte_size)

    def write(self, tensor: str, data: bytes) -> None:
        """Write an output's bytes; more than ``byte_size`` of them is the request's error (Triton's words)."""
        if len(data) > self.byte_size:
            raise InvalidArgumentError(
                f"shared memory size specified with the request for output '{tensor}' ({self.byte_size} bytes) "
                f"should be at least {len(data)} bytes to hold the results"
            )
        self.region.write(self.offset, data)

    def parameters(self, written: int) -> dict[str, Any]:
        """The parameters of a response's output written here (``written`` bytes of it)."""
        parameters: dict[str, Any] = {
            "shared_memory_region": self.region.name,
            "shared_memory_byte_size": written,
        }
        if self.offset:
            parameters["shared_memory_offset"] = self.offset
        return parameters


class SharedMemory:
    """The server's registered system shared memory regions, by name.

    ``refusal``: why this server takes no registrations (one worker of ``--workers N``, or turned off), else empty.
    Registering, listing and unregistering take only clients on the server's host (``local``: the adapters say,
    :func:`local_peer`): the regions are that host's objects, and a client elsewhere could otherwise map any object
    the server may open, read it through a model and write into it.
    """

    def __init__(self, refusal: str = "") -> None:
        self.refusal = refusal
        self._regions: dict[str, Region] = {}
        self._foreign = _ForeignRegions(self)

    def seen_from(self, peer: str | None) -> Locator:
        """The regions as an inference request from ``peer`` (as :func:`local_peer` takes it) may use them: all of
        them from the server's host, none from elsewhere (naming one is a 403). Free while none is registered."""
        if not self._regions or _local_cached(peer):
            return self
        return self._foreign

    def check_local(self, local: bool) -> None:
        """Refuse (403) a client on another host."""
        if not local:
            raise PermissionDeniedError(
                "system shared memory takes only clients on the server's host (a region is an object on that host)"
            )

    def register(self, name: str, key: str, offset: int, byte_size: int, local: bool = True) -> None:
        """Map ``byte_size`` bytes at ``offset`` of the object ``key`` as region ``name``."""
        if self.refusal:
            raise UnimplementedError(f"failed to register shared memory region '{name}': {self.refusal}")
        self.check_local(local)
        if not name:
            raise InvalidArgumentError("a shared memory region needs a name")
        if name in self._regions:
            raise RegionExistsError(f"shared memory region '{name}' already in manager")
        path = shm_path(key)
        if offset < 0 or byte_size < 0:
            raise InvalidArgumentError(f"failed to register shared memory region '{name}': invalid args")
        fd = _open(path, key)
        try:
            self._regions[name] = _mapped(RegionStatus(name, key, offset, byte_size), fd)
        except BaseException:
            os.close(fd)
            raise

    def status(self, name: str = "", local: bool = True) -> list[RegionStatus]:
        """Every region (``name`` empty) or the one named."""
        self.check_local(local)
        if not name:
            return [r.status for r in self._regions.values()]
        if name not in self._regions:
            raise NotFoundError(f"Unable to find system shared memory region: '{name}'")
        return [self._regions[name].status]

    def unregister(self, name: str = "", local: bool = True) -> None:
        """Unmap one region, or every region (``name`` empty); a name not registered is no error (as Triton)."""
        self.check_local(local)
        names = [name] if name else list(self._regions)
        for each in names:
            region = self._regions.pop(each, None)
            if region is not None:
                region.close()

    def close(self) -> None:
        """Unmap every region (the server stops)."""
        self.unregister()

    @staticmethod
    def cuda_status(name: str = "") -> list[RegionStatus]:
        """CUDA shared memory: none is ever registered (Triton built without GPU support answers the same)."""
        if name:
            raise NotFoundError(f"Unable to find cuda shared memory region: '{name}'")
        return []

    @staticmethod
    def cuda_register(name: str) -> None:
        """CUDA shared memory is refused, in the words of Triton built without GPU support. (Its unregister
        succeeds: with nothing registered there is nothing to do, and Triton's clients call it first.)"""
        raise InvalidArgumentError(
            f"failed to register CUDA shared memory region: '{name}', GPUs not supported (modelport implements "
            "system shared memory only: create the region in system memory and register it as system shared memory)"
        )

    def locate(self, tensor: str, parameters: Any) -> SharedTensor | None:
        """Where a request's tensor lies, from its ``shared_memory_*`` parameters (a dict of plain values);
        None when it names no region."""
        region = parameters.get("shared_memory_region")
        offset = parameters.get("shared_memory_offset")
        size = parameters.get("shared_memory_byte_size")
        if region is None:
            for key, value in (("shared_memory_offset", offset), ("shared_memory_byte_size", size)):
                if value is not None:
                    raise InvalidArgumentError(
                        f"'{key}' can not be specified without 'shared_memory_region' parameter for tensor '{tensor}'"
                    )
            return None
        if not isinstance(region, str):
            raise InvalidArgumentError(
                f"invalid value type for 'shared_memory_region' parameter for tensor '{tensor}', expected string"
            )
        if size is None:
            raise InvalidArgumentError(
                f"'shared_memory_byte_size' must be specified along with 'shared_memory_region' parameter for "
                f"tensor '{tensor}'"
            )
        offset = _integer(tensor, "shared_memory_offset", 0 if offset is None else offset)
        return self.slot(region, offset, _integer(tensor, "shared_memory_byte_size", size))

    def slot(self, name: str, offset: int, byte_size: int) -> SharedTensor:
        """``byte_size`` bytes at ``offset`` of the registered region ``name``, checked against its size."""
        region = self._regions.get(name)
        if region is None:
            raise NotFoundError(f"Unable to find shared memory region: '{name}'")
        if offset >= region.status.byte_size:
            raise InvalidArgumentError(f"Invalid offset for shared memory region: '{name}'")
        if offset + byte_size > region.status.byte_size:
            raise InvalidArgumentError(f"Invalid offset + byte size for shared memory region: '{name}'")
        return SharedTensor(region, offset, byte_size)


class _ForeignRegions:
    """The regions as a client on another host sees them: a request that names one is refused (403), as its
    registration would be; the other ``shared_memory_*`` parameters are checked as for anyone."""

    def __init__(self, regions: SharedMemory) -> None:
        self._regions = regions

    def locate(self, tensor: str, parameters: Any) -> SharedTensor | None:
        if parameters.get("shared_memory_region") is not None:
            self._regions.check_local(False)
        return self._regions.locate(tensor, parameters)


@functools.lru_cache(maxsize=1024)
def _local_cached(peer: str | None) -> bool:
    return local_peer(peer)


def _integer(tensor: str, key: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidArgumentError(
            f"invalid value for '{key}' parameter for tensor '{tensor}', expected a non-negative integer"
        )
    return value


def _open(path: Path, key: str) -> int:
    """The object's descriptor, read-write; only a regular file directly under ``SHM_ROOT`` (no symlink)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        raise InvalidArgumentError(f"Unable to open shared memory region: '{key}'") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InvalidArgumentError(f"Unable to open shared memory region: '{key}'")
    return fd


def _mapped(status: RegionStatus, fd: int) -> Region:
    """The region mapped from its page-aligned start (mmap's offset must be a multiple of the granularity)."""
    end = status.offset + status.byte_size
    if status.byte_size == 0 or end > os.fstat(fd).st_size:
        raise InvalidArgumentError(
            f"failed to register shared memory region '{status.name}': invalid args (offset {status.offset} + "
            f"byte_size {status.byte_size} must lie inside '{status.key}', {os.fstat(fd).st_size} bytes)"
        )
    start = status.offset - status.offset % mmap.ALLOCATIONGRANULARITY
    mapping = mmap.mmap(fd, end - start, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=start)
    return Region(status, fd, mapping, status.offset - start)
