"""Value constraints of constructor parameters, written into their signatures, which stay the schema:
`batch_size: Annotated[int, Positive]`. `dlforge.config.checks` refuses a value outside them at start-up
with the key and what is allowed, before the constructor (or a division by it, much later) fails."""

from __future__ import annotations

from dataclasses import dataclass

from dlforge.errors import ConfigError


@dataclass(frozen=True)
class Range:
    """Numbers within optional bounds (`gt`/`ge` below, `lt`/`le` above), plus the `also` values."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    also: tuple[float, ...] = ()

    def allows(self, value: float) -> bool:
        if value in self.also:
            return True
        return not (
            (self.gt is not None and value <= self.gt)
            or (self.ge is not None and value < self.ge)
            or (self.lt is not None and value >= self.lt)
            or (self.le is not None and value > self.le)
        )

    def __str__(self) -> str:
        bounds = ((">", self.gt), (">=", self.ge), ("<", self.lt), ("<=", self.le))
        text = " and ".join(f"{sign} {bound:g}" for sign, bound in bounds if bound is not None)
        return text + "".join(f", or {value:g}" for value in self.also)


Positive = Range(gt=0)
NonNegative = Range(ge=0)
Fraction = Range(gt=0, lt=1)  # a share of a whole that leaves something on both sides
Probability = Range(ge=0, lt=1)  # dropout: 1 would drop everything
Chance = Range(ge=0, le=1)  # from never to always


class ParameterError(ConfigError):
    """A constructor refusing a combination of its parameters; `dlforge.cli` prefixes the parameter with
    the config node that was being built (`model.net.heads: ...`)."""

    def __init__(self, parameter: str, message: str):
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter
