"""Fleet membership: the coordinator's table of registered MP servers and their heartbeat expiry.

Expiry runs on the injected monotonic `Clock`; the wall-clock times shown by `GET /instances` come from a
separate `wall` callable so tests can pin both. An instance whose last heartbeat is `timeout_s` old or
older (`>=`, so exactly at the timeout) is expired by `expire()`.

Threading: not thread-safe; the coordinator owns one registry on its event loop.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from lmcache.ports.clock import Clock

__all__ = ("InstanceRecord", "InstanceRegistry")


@dataclass(slots=True)
class InstanceRecord:
    """One registered server.

    Attributes:
        instance_id: The server's id (its `--instance-id`, or one the coordinator assigned).
        ip: Address the coordinator reaches the server's HTTP frontend on.
        http_port: The server's HTTP port.
        metadata: Free-form registration metadata, returned as sent.
        p2p_advertised_url: The server's P2P URL ("" when none).
        mq_port: The server's message-queue port (0 when none).
        registration_time: Wall-clock time (epoch seconds) of the latest registration.
        last_heartbeat: Wall-clock time of the latest registration or heartbeat.
        last_seen: Monotonic time of the latest registration or heartbeat (drives expiry).
    """

    instance_id: str
    ip: str
    http_port: int
    metadata: dict[str, Any] = field(default_factory=dict)
    p2p_advertised_url: str = ""
    mq_port: int = 0
    registration_time: float = 0.0
    last_heartbeat: float = 0.0
    last_seen: float = 0.0

    @property
    def http_url(self) -> str:
        """Base URL of the server's HTTP frontend (IPv6 addresses bracketed)."""
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"http://{host}:{self.http_port}"

    def to_json(self) -> dict[str, Any]:
        """The `GET /instances` form of this record."""
        return {
            "instance_id": self.instance_id,
            "ip": self.ip,
            "http_port": self.http_port,
            "registration_time": self.registration_time,
            "last_heartbeat": self.last_heartbeat,
            "metadata": self.metadata,
            "p2p_advertised_url": self.p2p_advertised_url,
            "mq_port": self.mq_port,
        }


class InstanceRegistry:
    """Registered instances with heartbeat expiry.

    Args:
        clock: Monotonic time source for expiry.
        timeout_s: Seconds without a heartbeat after which an instance expires (> 0).
        wall: Wall-clock source for the displayed times (default `time.time`).
    """

    def __init__(self, clock: Clock, timeout_s: float, wall: Callable[[], float] = time.time) -> None:
        if timeout_s <= 0:
            raise ValueError(f"instance timeout must be > 0 s, got {timeout_s}")
        self._clock = clock
        self._wall = wall
        self.timeout_s = timeout_s
        self._instances: dict[str, InstanceRecord] = {}

    def register(
        self,
        instance_id: str,
        ip: str,
        http_port: int,
        metadata: dict[str, Any] | None = None,
        p2p_advertised_url: str = "",
        mq_port: int = 0,
    ) -> tuple[str, bool]:
        """Add or refresh an instance.

        Args:
            instance_id: The id to register under; "" asks the registry to assign a fresh one.
            ip: Address of the server's HTTP frontend.
            http_port: Its port.
            metadata: Free-form metadata kept as sent.
            p2p_advertised_url: The server's P2P URL.
            mq_port: The server's message-queue port.

        Returns:
            `(instance_id, re_registered)`; re_registered is True when the id was already registered.
        """
        if not instance_id:
            instance_id = uuid.uuid4().hex
            while instance_id in self._instances:  # pragma: no cover - a uuid4 collision
                instance_id = uuid.uuid4().hex
        re_registered = instance_id in self._instances
        wall = self._wall()
        self._instances[instance_id] = InstanceRecord(
            instance_id=instance_id,
            ip=ip,
            http_port=http_port,
            metadata=dict(metadata or {}),
            p2p_advertised_url=p2p_advertised_url,
            mq_port=mq_port,
            registration_time=wall,
            last_heartbeat=wall,
            last_seen=self._clock.monotonic(),
        )
        return instance_id, re_registered

    def heartbeat(self, instance_id: str) -> bool:
        """Record a heartbeat; False when the id is unknown (the server must register again)."""
        record = self._instances.get(instance_id)
        if record is None:
            return False
        record.last_seen = self._clock.monotonic()
        record.last_heartbeat = self._wall()
        return True

    def deregister(self, instance_id: str) -> bool:
        """Remove an instance; True when it was registered (the HTTP route is idempotent either way)."""
        return self._instances.pop(instance_id, None) is not None

    def get(self, instance_id: str) -> InstanceRecord | None:
        """The record of `instance_id`, or None."""
        return self._instances.get(instance_id)

    def __contains__(self, instance_id: object) -> bool:
        return instance_id in self._instances

    def __len__(self) -> int:
        return len(self._instances)

    def all(self) -> list[InstanceRecord]:
        """Every registered instance, expired or not, in registration order."""
        return list(self._instances.values())

    def is_expired(self, record: InstanceRecord) -> bool:
        """True when the record's last heartbeat is `timeout_s` old or older."""
        return self._clock.monotonic() - record.last_seen >= self.timeout_s

    def live(self) -> list[InstanceRecord]:
        """Instances that have not timed out (whether or not the sweep has removed the others yet)."""
        return [r for r in self._instances.values() if not self.is_expired(r)]

    def expire(self) -> list[str]:
        """Remove every instance whose heartbeat lapsed; returns their ids in registration order."""
        gone = [r.instance_id for r in self._instances.values() if self.is_expired(r)]
        for instance_id in gone:
            del self._instances[instance_id]
        return gone
