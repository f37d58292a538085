"""Toxics: the network conditions a :class:`ToxicProxy` can impose (toxiproxy's model).

Each toxic acts on one direction: ``"downstream"`` is upstream → client (responses),
``"upstream"`` is client → upstream (requests), as in toxiproxy. ``toxicity`` is the
probability that a given connection is affected; the proxy draws it from its seeded
``random.Random``, once per connection and toxic.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import attrs

__all__ = ["Direction", "Toxic"]

Direction = Literal["upstream", "downstream"]


def _non_negative(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def _probability(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be within [0, 1], got {value!r}")


@attrs.frozen(kw_only=True, repr=False)
class Toxic:
    """Base of every toxic; build them with ``Toxic.latency(...)`` and friends."""

    kind: ClassVar[str] = "toxic"
    direction: Direction = attrs.field(
        default="downstream", validator=attrs.validators.in_(("upstream", "downstream"))
    )
    toxicity: float = attrs.field(default=1.0, validator=_probability)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in attrs.asdict(self, recurse=False).items())
        return f"Toxic.{self.kind}({args})"

    @staticmethod
    def latency(
        seconds: float,
        jitter: float = 0.0,
        *,
        direction: Direction = "downstream",
        toxicity: float = 1.0,
    ) -> Toxic:
        """Delay every chunk by ``seconds`` ± ``jitter``."""
        return Latency(seconds=seconds, jitter=jitter, direction=direction, toxicity=toxicity)

    @staticmethod
    def bandwidth(
        bytes_per_second: int, *, direction: Direction = "downstream", toxicity: float = 1.0
    ) -> Toxic:
        """Limit throughput to ``bytes_per_second``."""
        return Bandwidth(rate=bytes_per_second, direction=direction, toxicity=toxicity)

    @staticmethod
    def slicer(
        average_size: int = 1,
        size_variation: int = 0,
        delay: float = 0.0,
        *,
        direction: Direction = "downstream",
        toxicity: float = 1.0,
    ) -> Toxic:
        """Cut data into writes of ``average_size ± size_variation`` bytes, ``delay`` apart."""
        return Slicer(
            average_size=average_size,
            size_variation=size_variation,
            delay=delay,
            direction=direction,
            toxicity=toxicity,
        )

    @staticmethod
    def limit_data(
        nbytes: int, *, direction: Direction = "downstream", toxicity: float = 1.0
    ) -> Toxic:
        """Close the connection once ``nbytes`` went through in this direction."""
        return LimitData(nbytes=nbytes, direction=direction, toxicity=toxicity)

    @staticmethod
    def reset_peer(
        after: float = 0.0, *, direction: Direction = "downstream", toxicity: float = 1.0
    ) -> Toxic:
        """Reset (RST) the client connection ``after`` seconds (counted from when both the
        connection and the toxic exist)."""
        return ResetPeer(after=after, direction=direction, toxicity=toxicity)

    @staticmethod
    def timeout(
        after: float = 0.0, *, direction: Direction = "downstream", toxicity: float = 1.0
    ) -> Toxic:
        """Stop all data; close the connection ``after`` seconds (0: never close)."""
        return Timeout(after=after, direction=direction, toxicity=toxicity)

    @staticmethod
    def down() -> Toxic:
        """Take the proxy down: refuse connections and drop open ones until removed."""
        return Down()


@attrs.frozen(kw_only=True, repr=False)
class Latency(Toxic):
    kind: ClassVar[str] = "latency"
    seconds: float = attrs.field(validator=_non_negative)
    jitter: float = attrs.field(default=0.0, validator=_non_negative)


@attrs.frozen(kw_only=True, repr=False)
class Bandwidth(Toxic):
    kind: ClassVar[str] = "bandwidth"
    rate: int = attrs.field(validator=attrs.validators.gt(0))


@attrs.frozen(kw_only=True, repr=False)
class Slicer(Toxic):
    kind: ClassVar[str] = "slicer"
    average_size: int = attrs.field(validator=attrs.validators.gt(0))
    size_variation: int = attrs.field(default=0, validator=_non_negative)
    delay: float = attrs.field(default=0.0, validator=_non_negative)


@attrs.frozen(kw_only=True, repr=False)
class LimitData(Toxic):
    kind: ClassVar[str] = "limit_data"
    nbytes: int = attrs.field(validator=_non_negative)


@attrs.frozen(kw_only=True, repr=False)
class ResetPeer(Toxic):
    kind: ClassVar[str] = "reset_peer"
    after: float = attrs.field(default=0.0, validator=_non_negative)


@attrs.frozen(kw_only=True, repr=False)
class Timeout(Toxic):
    kind: ClassVar[str] = "timeout"
    after: float = attrs.field(default=0.0, validator=_non_negative)


@attrs.frozen(kw_only=True, repr=False)
class Down(Toxic):
    kind: ClassVar[str] = "down"
