"""Cross-attention maps kept across a sampling run: a running sum per layer (a local blend's store) and an
optional recorder that sees every map a processor computes (for tests and inspection)."""

from __future__ import annotations

from typing import Callable

import torch

Recorder = Callable[[dict], None]
"""Receives one dict per recorded attention call: step, layer and the maps involved, named by the method."""


class MapStore:
    """Reduced cross-attention maps summed over the steps of a run, per layer; ``mean()`` averages the layers.

    What is stored is the method's business (P2P: word-weighted sums over tokens; InfEdit: head means): sums and
    means are linear, so reducing before storing equals P2P's store of full maps reduced at blend time.
    """

    def __init__(self) -> None:
        self._sums: dict[int, torch.Tensor] = {}

    def clear(self) -> None:
        self._sums = {}

    def add(self, layer: int, maps: torch.Tensor) -> None:
        self._sums[layer] = self._sums[layer] + maps if layer in self._sums else maps

    def __len__(self) -> int:
        return len(self._sums)

    def layers(self) -> set[int]:
        """The layers whose maps are stored."""
        return set(self._sums)

    def mean(self) -> torch.Tensor:
        """The stored sums averaged over layers (every layer holds a tensor of one shape)."""
        if not self._sums:
            raise RuntimeError("local blend without stored cross-attention maps (no blend layer ran)")
        return torch.stack(list(self._sums.values())).mean(dim=0)
