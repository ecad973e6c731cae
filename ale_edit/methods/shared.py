"""What the methods share beyond the interface: the baselines' conditionings, the target's take of the source's
self-attention maps, the processor of each layer, and the baselines' local blend.

- ``joined_conditioning``: the source and target prompts (the joined phrases, or an edit's whole prompts).
- ``take_source_maps``: the target branch's queries and keys become the source branch's (its values stay its own),
  so its self-attention maps are the source's: ALE-Edit's Q,K injection, P2P's and FPE's self-attention
  replacement, InfEdit's target branch.
- ``layer_processors``: one processor (or one per layer) for the cross- and one for the self-attention layers;
  ``BlendLayerCrossAttention``, the base of the baselines' cross-attention at the local blend's layers.
- ``LocalBlend``: after a step, the target latent keeps its edit only where the edited words' cross-attention maps
  say, and takes another branch's latent elsewhere (prompt-to-prompt's ``LocalBlend``, InfEdit's blend). It holds
  which steps it blends after (a step set), the store of the maps its layers add over the run (cleared when a run
  begins; which layers add is fixed by ``blend_layers`` when the processors are installed), and the placement of
  stored maps on the latent grid. A method subclasses it with what it stores (``reduce``) and how it makes its mask
  and blends (``blend``).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..attention_maps import MapStore
from ..processors import AttentionProcessor, BranchLayout, Layer, query_grid
from ..sampler import LatentBlend, StepState
from ..steps import select
from ..text import edit_texts
from .base import Conditioning, EditBatch

BOTH_HALVES = (False, True)  # the unconditional and the conditional chunks
CONDITIONAL = (True,)
BLEND_LEVEL = 2  # P2P's LocalBlend reads down_cross[2:4] + up_cross[:3], the 16x16 layers at 512^2


def joined_conditioning(batch: EditBatch, *, source: bool = True, mutual: bool = False) -> Conditioning:
    """The baselines' conditionings: the source prompt (or the empty prompt when the method takes only the target
    prompt) and the target prompt; InfEdit's mutual branch takes the source prompt. The prompts are an edit's whole
    prompts when it has them (PIE-Bench), else its joined source and target phrases (``text.edit_texts``)."""
    n = len(batch)
    texts = [edit_texts(p, prompts) for p, prompts in zip(batch.pairs, batch.edit_prompts())]
    sources = [s if source else "" for s, _ in texts]
    targets = [t for _, t in texts]
    embeds = batch.encode(["", *sources, *targets])
    return Conditioning(uncond=embeds[:1].expand(n, -1, -1), source=embeds[1 : 1 + n], target=embeds[1 + n :],
                        mutual=embeds[1 : 1 + n] if mutual else None)


def take_source_maps_of_chunks(layout: BranchLayout, qs: list[torch.Tensor], ks: list[torch.Tensor],
                               inject: torch.Tensor | bool, halves: Sequence[bool] = BOTH_HALVES) -> None:
    """In the chunk lists ``qs`` and ``ks`` (``layout.chunks``), the target's chunk of each half in ``halves``
    takes the source's where ``inject`` (a ``StepSets.mask``) is set."""
    for conditional in halves:
        src, tgt = layout.chunk("source", conditional), layout.chunk("target", conditional)
        qs[tgt], ks[tgt] = select(inject, qs[src], qs[tgt]), select(inject, ks[src], ks[tgt])


def take_source_maps(layout: BranchLayout, q: torch.Tensor, k: torch.Tensor, inject: torch.Tensor | bool,
                     halves: Sequence[bool] = BOTH_HALVES) -> tuple[torch.Tensor, torch.Tensor]:
    """Q and K, (batch, heads, N, d), with the target branch's taking the source's in ``halves`` where ``inject``
    is set: SDPA(Q, K, V) then gives the target the source's self-attention maps over its own values."""
    if inject is False:
        return q, k
    qs, ks = layout.chunks(q), layout.chunks(k)
    take_source_maps_of_chunks(layout, qs, ks, inject, halves)
    return torch.cat(qs), torch.cat(ks)


Factory = Callable[[Layer], AttentionProcessor]


def layer_processors(cross: AttentionProcessor | Factory,
                     self_attention: AttentionProcessor | Factory) -> Factory:
    """The processor of each attention layer (for ``install_processors``): ``cross`` on the cross-attention layers,
    ``self_attention`` on the self-attention ones; each is one processor for all of them or a function of the
    ``Layer``."""
    def make(layer: Layer) -> AttentionProcessor:
        chosen = cross if layer.is_cross else self_attention
        return chosen if isinstance(chosen, AttentionProcessor) else chosen(layer)

    return make


class BlendLayerCrossAttention(AttentionProcessor):
    """A baseline's cross-attention processor of layer ``layer`` (its index in the forward pass); at a blend layer
    (``store``, one of ``blend_layers``) it adds its maps to the controller's local blend."""

    def __init__(self, controller, layer: int, store: bool = False):
        self.controller = controller
        self.layer = layer
        self.store = store


def blend_layers(blocks: Sequence[Layer], level: int = BLEND_LEVEL) -> set[int]:
    """The local blend's layers: the non-mid transformer blocks of ``level`` (SD-1.5: blocks 4, 5, 7, 8, 9), or of
    the deepest non-mid level of a shallower UNet (the tiny test UNet: blocks 1, 3, 4)."""
    candidates = [b for b in blocks if not b.is_mid]
    if not candidates:
        return set()
    level = min(level, max(b.level for b in candidates))
    return {b.index for b in candidates if b.level == level}


def on_grid(maps: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, C, N) maps of N queries -> (B, C, rows, cols) on the layer's query grid of the latent's aspect."""
    b, c, n = maps.shape
    rows, cols = query_grid(n, height, width)
    return maps.reshape(b, c, rows, cols)


def upsample(grid: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Nearest upsampling of (B, C, rows, cols) to the latent's (height, width)."""
    return F.interpolate(grid, size=(height, width), mode="nearest")


class LocalBlend(LatentBlend):
    """Blends after the steps in ``steps``, from the maps its layers ``add``."""

    def __init__(self, steps: frozenset):
        self.steps = frozenset(steps)
        self.store = MapStore()

    def begin_step(self, step: int) -> None:
        if step == 0:  # a new run
            self.store.clear()

    def add(self, layer: int, *maps: torch.Tensor) -> None:
        """Add one layer's maps of the current step to the store, reduced by ``reduce``."""
        self.store.add(layer, self.reduce(*maps))

    def reduce(self, *maps: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, state: StepState) -> torch.Tensor:
        if state.step not in self.steps:
            return state.x_t
        return self.blend(state, self.store.mean().to(state.x_t.device))

    def blend(self, state: StepState, maps: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
