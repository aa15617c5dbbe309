"""Log ids: `<topic>/<partition>`, and `<topic>@<epoch>/<partition>` once a broker lost the topic.

A log is one partition of a sequenced topic, as long as that partition's
offsets mean what they meant when the log began. A broker that loses its data
(the embedded broker keeps topics in memory) brings the topic back empty, its
offsets starting at 0 again. Continuing the old log from there would number
new records with offsets it already holds, and starting it again at height 0
would fork it. So the partition starts a new log instead, the next *epoch*:
the old log ends at its last recorded block and stays verifiable; the new one
begins at height 0 with its own id. Epoch 0 keeps the plain id of the contract.
Kafka topic names cannot contain `@`, so the id is never ambiguous.
"""

from __future__ import annotations

from typing import NamedTuple


class LogName(NamedTuple):
    topic: str
    partition: int
    epoch: int


def log_id(topic: str, partition: int, epoch: int = 0) -> str:
    """The id of epoch `epoch` of the log of `topic` partition `partition`.

    >>> log_id("shipment-events", 3), log_id("shipment-events", 3, 2)
    ('shipment-events/3', 'shipment-events@2/3')
    """
    if epoch < 0:
        raise ValueError(f"a log epoch is never negative, got {epoch}")
    return f"{topic}/{partition}" if epoch == 0 else f"{topic}@{epoch}/{partition}"


def parse_log_id(text: str) -> LogName | None:
    """The topic, partition and epoch a log id names; None for text that is not a log id.

    >>> parse_log_id("shipment-events@2/3")
    LogName(topic='shipment-events', partition=3, epoch=2)
    >>> parse_log_id("shipment-events/x") is None
    True
    """
    head, sep, partition = text.rpartition("/")
    if not sep or not partition.isdigit() or not head:
        return None
    topic, at, epoch = head.partition("@")
    if not topic or (at and not epoch.isdigit()):
        return None
    return LogName(topic, int(partition), int(epoch) if at else 0)
