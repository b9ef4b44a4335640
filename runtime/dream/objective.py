"""What to dream on, as plain data every engine understands: layers, their channels and weights.

The text form, used by `gen dream --layers`, is a comma-separated list of terms
`LAYER[:CHANNEL[+CHANNEL...]][=WEIGHT]`, for example `block6`, `block5=1,block8=0.5` or
`inception4c:12+40=2`.
"""

from __future__ import annotations

from dataclasses import dataclass

from gen.runtime.errors import GenError


@dataclass(frozen=True)
class LayerTerm:
    layer: str
    channels: tuple[int, ...] = ()  # empty: all channels
    weight: float = 1.0

    def __str__(self) -> str:
        text = self.layer + (":" + "+".join(map(str, self.channels)) if self.channels else "")
        return text + (f"={self.weight:g}" if self.weight != 1.0 else "")


def parse_layers(text: str) -> list[LayerTerm]:
    """'block5=1,block8:3+7=0.5' -> [LayerTerm('block5'), LayerTerm('block8', (3, 7), 0.5)]."""
    terms = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        name, _, weight_text = part.partition("=")
        layer, _, channel_text = name.strip().partition(":")
        try:
            weight = float(weight_text) if weight_text.strip() else 1.0
            channels = tuple(int(c) for c in channel_text.split("+")) if channel_text.strip() else ()
        except ValueError:
            raise GenError(f"cannot read layer term '{part}'; write LAYER[:CHANNEL[+CHANNEL]][=WEIGHT], "
                           "e.g. block6:12=0.5") from None
        if not layer.strip():
            raise GenError(f"layer term '{part}' names no layer")
        if any(c < 0 for c in channels):
            raise GenError(f"layer term '{part}': channels count from 0")
        terms.append(LayerTerm(layer.strip(), channels, weight))
    if not terms:
        raise GenError("no layers given; e.g. --layers block6 (see --list-layers)")
    return terms
