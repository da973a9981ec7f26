"""Publishing on Redis Cluster: XADD each event to its partition, one pipeline per call.

redis-py's cluster pipeline splits the XADDs by node and sends each node its share in one
round trip, the nodes in parallel; it follows MOVED/ASK replies and, after a lost connection,
refreshes the slot map and sends again (a failover: the promoted replica takes the writes).
A resend after a reply was lost can write an event twice, so the guarantee is at-least-once,
as everywhere else; consumers dedupe on ``event.id``. A call that still fails raises
PublishError, and ``may_have_been_written`` is False only when Redis refused every entry.

With ``publish_wait_replicas`` > 0 the call then sends ``WAIT n timeout`` to each master it
wrote to (in parallel) and raises PublishError(may_have_been_written=True) when fewer replicas
confirmed: a failover can then lose only what the replicas had not confirmed yet.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from redis.asyncio.cluster import ClusterNode, RedisCluster

from dotmac.events.adapters.redis.errors import translate
from dotmac.events.adapters.redis_cluster.partitions import partition_of
from dotmac.events.adapters.redis_cluster_config import RedisClusterConfig
from dotmac.events.errors import PublishError
from dotmac.events.event import Event

__all__ = ["ClusterPublisher"]


class ClusterPublisher:
    """XADDs encoded events to their partition streams; see the module docstring."""

    def __init__(
        self,
        client: RedisCluster,
        config: RedisClusterConfig,
        streams: Callable[[str], list[str]],
    ) -> None:
        self._client = client
        self._config = config
        self._streams = streams
        self._turn = 0  # round-robin place of events without a key

    def place(self, event: Event) -> str:
        """The partition stream ``event`` goes to."""
        streams = self._streams(event.topic)
        if event.key is None:
            self._turn += 1
        return streams[partition_of(event.key, len(streams), self._turn)]

    async def send(self, batch: Sequence[tuple[Event, bytes]]) -> None:
        """XADD every event of ``batch``; return once Redis accepted all of them.

        Raises:
            PublishError: an entry was refused, or no reply came within ``publish_timeout``.
        """
        config = self._config
        pipe = self._client.pipeline(transaction=False)
        written: set[str] = set()
        for event, data in batch:
            stream = self.place(event)
            written.add(stream)
            fields: dict[str | bytes, bytes | str] = {"data": data}
            if event.key is not None:
                fields["key"] = event.key
            if config.max_stream_length is None:
                pipe.xadd(stream, fields)  # type: ignore[arg-type]
            else:
                pipe.xadd(stream, fields, maxlen=config.max_stream_length, approximate=True)  # type: ignore[arg-type]
        doing = f"publish of {len(batch)} event(s)"
        try:
            async with asyncio.timeout(config.publish_timeout):
                replies = await pipe.execute(raise_on_error=False)
        except Exception as exc:
            raise translate(exc, doing=doing, secrets=config.secrets, publish=True) from exc
        failures = [reply for reply in replies if isinstance(reply, BaseException)]
        if failures:
            error = translate(failures[0], doing=doing, secrets=config.secrets, publish=True)
            if isinstance(error, PublishError):
                error.may_have_been_written = len(failures) < len(replies)
            raise error from failures[0]
        if config.publish_wait_replicas:
            await self._wait_replicas(written, doing)

    async def _wait_replicas(self, streams: set[str], doing: str) -> None:
        config = self._config
        nodes: dict[str, ClusterNode] = {}
        for stream in streams:
            node = self._client.get_node_from_key(stream)
            if node is not None:
                nodes[node.name] = node
        wanted, timeout = config.publish_wait_replicas, config.publish_wait_timeout_ms
        try:
            confirmed = await asyncio.gather(
                *(
                    self._client.execute_command("WAIT", wanted, timeout, target_nodes=node)
                    for node in nodes.values()
                )
            )
        except Exception as exc:
            raise translate(
                exc, doing=f"WAIT after {doing}", secrets=config.secrets, publish=True
            ) from exc
        short = [
            f"{name}: {int(got)}"
            for name, got in zip(nodes, confirmed, strict=True)
            if int(got) < wanted
        ]
        if short:
            raise PublishError(
                f"redis cluster {doing}: written, but fewer than {wanted} replica(s) confirmed "
                f"within {timeout} ms ({', '.join(short)}); a failover now could lose it",
                may_have_been_written=True,
            )
