"""What every attention processor shares: the batch's branch layout, Q/K/V in heads, and installation on a UNet.

**Batch layout.** The sampler runs the UNet once per step on a batch of chunks, the unconditional chunks of every
branch first, then the conditional ones, each chunk holding the B edits of the batch:
``[source_u, target_u, source_c, target_c]`` for the two-branch sampler, with InfEdit's mutual branch last in
each half: ``[source_u, target_u, mutual_u, source_c, target_c, mutual_c]``. ``BranchLayout`` is the one place
that knows these positions; processors read B from the tensors and the head count from the attention module.

**Processors** subclass ``AttentionProcessor``: diffusers' ``AttnProcessor2_0`` prelude and epilogue (spatial and
group norms, residual, output projection) around an ``attend(attn, hidden_states, encoder_hidden_states)`` that
returns the attention output before ``to_out``. ``install_processors`` puts one on every attention layer with
``unet.set_attn_processor``; each gets its ``Layer`` (index in the forward pass, level, self or cross), fixed at
installation, so no processor counts calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # only for annotations: importing diffusers costs seconds at start-up
    from diffusers.models.attention_processor import Attention


@dataclass(frozen=True)
class BranchLayout:
    """Where each branch's unconditional and conditional chunks lie in the sampler's batch."""

    branches: tuple[str, ...]

    @property
    def n_chunks(self) -> int:
        return 2 * len(self.branches)

    def chunk(self, branch: str, conditional: bool) -> int:
        """The index of ``branch``'s unconditional or conditional chunk."""
        return self.branches.index(branch) + (len(self.branches) if conditional else 0)

    @property
    def first_conditional(self) -> int:
        return len(self.branches)

    def chunks(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The chunks of ``x`` along the batch, as views."""
        if x.shape[0] % self.n_chunks:
            raise ValueError(f"batch of {x.shape[0]} is not {self.n_chunks} chunks of equal size "
                             f"(branches {', '.join(self.branches)}, unconditional and conditional)")
        return list(x.chunk(self.n_chunks, dim=0))

    def edits(self, x: torch.Tensor) -> int:
        """B, the number of edits in the batch."""
        return self.chunks(x)[0].shape[0]

    def pairs(self, a: str, b: str) -> tuple[tuple[int, int], ...]:
        """(chunk of ``a``, chunk of ``b``) in the unconditional and in the conditional half."""
        return tuple((self.chunk(a, c), self.chunk(b, c)) for c in (False, True))

    def stack(self, uncond: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        """The batch of conditionings: ``uncond`` for every unconditional chunk, then each branch's own."""
        return torch.cat([uncond] * len(self.branches) + [cond[b] for b in self.branches])


TWO_BRANCHES = BranchLayout(("source", "target"))
THREE_BRANCHES = BranchLayout(("source", "target", "mutual"))  # InfEdit's mutual branch


# -- Q, K, V ----------------------------------------------------------------------------------------------------

def to_heads(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """(b, n, heads * d) -> (b, heads, n, d)."""
    b, n, _ = x.shape
    return x.view(b, n, attn.heads, -1).transpose(1, 2)


def from_heads(x: torch.Tensor) -> torch.Tensor:
    """(b, heads, n, d) -> (b, n, heads * d)."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def project(attn: Attention, hidden_states: torch.Tensor, context: torch.Tensor):
    """Q from the queries' hidden states, K and V from ``context``, in heads, with the layer's Q/K norms."""
    q = to_heads(attn, attn.to_q(hidden_states))
    k = to_heads(attn, attn.to_k(context))
    v = to_heads(attn, attn.to_v(context))
    if attn.norm_q is not None:
        q, k = attn.norm_q(q), attn.norm_k(k)
    return q, k, v


def self_attention_qkv(attn: Attention, hidden_states, encoder_hidden_states):
    """Q, K, V in heads, (batch, heads, N, d), of a self-attention layer."""
    if encoder_hidden_states is not None:
        raise ValueError("a self-attention processor was installed on a cross-attention layer")
    return project(attn, hidden_states, hidden_states)


def cross_attention_qkv(attn: Attention, hidden_states, encoder_hidden_states):
    """Q (batch, heads, N, d) of the pixels, K and V (batch, heads, T, d) of the text, of a cross-attention
    layer."""
    if encoder_hidden_states is None:
        raise ValueError("a cross-attention processor was installed on a self-attention layer")
    if attn.norm_cross:
        encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
    return project(attn, hidden_states, encoder_hidden_states)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """SDPA of heads, back to (b, n, heads * d)."""
    return from_heads(F.scaled_dot_product_attention(q, k, v))


def probabilities(attn: Attention, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """softmax(Q K^T * scale) in fp32, (b, heads, N, T): cross-attention maps (77 keys) that methods edit."""
    return (q.float() @ k.float().transpose(-1, -2) * attn.scale).softmax(dim=-1)


def query_grid(n_queries: int, height: int, width: int) -> tuple[int, int]:
    """(rows, cols) of a layer's ``n_queries`` on a ``height`` x ``width`` latent grid of the same aspect."""
    scale = math.sqrt(height * width / n_queries)
    rows, cols = round(height / scale), round(width / scale)
    if rows * cols != n_queries:
        raise ValueError(f"cannot place {n_queries} attention queries on a {height}x{width} latent grid")
    return rows, cols


# -- processors -------------------------------------------------------------------------------------------------

class AttentionProcessor:
    """The prelude and epilogue of diffusers' ``AttnProcessor2_0`` around ``attend``, which subclasses define."""

    def __call__(self, attn: Attention, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        if attention_mask is not None:
            raise NotImplementedError("ale-edit's processors do not take an attention mask from the UNet")
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        out = self.attend(attn, hidden_states, encoder_hidden_states)

        out = attn.to_out[0](out)
        out = attn.to_out[1](out)
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor

    def attend(self, attn: Attention, hidden_states, encoder_hidden_states) -> torch.Tensor:
        raise NotImplementedError


class PlainAttention(AttentionProcessor):
    """Attention without control (SDPA), for the layers a method leaves alone."""

    def attend(self, attn, hidden_states, encoder_hidden_states):
        if encoder_hidden_states is None:
            q, k, v = self_attention_qkv(attn, hidden_states, encoder_hidden_states)
        else:
            q, k, v = cross_attention_qkv(attn, hidden_states, encoder_hidden_states)
        return attention(q, k, v)


# -- layers and installation ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Layer:
    """An attention layer as a method sees it: its transformer block's place in the forward pass (``index``), the
    block's ``level`` (how many 2x downsamplings precede it), whether it is cross-attention, and its block name."""

    index: int
    level: int
    is_cross: bool
    block: str

    @property
    def is_mid(self) -> bool:
        return self.block.startswith("mid_block")


def transformer_blocks_in_call_order(unet) -> list[str]:
    """The UNet's transformer blocks (``...transformer_blocks.N``) in the order a forward pass runs them: down
    blocks, the mid block, up blocks. (``unet.attn_processors`` lists them in registration order, mid last.)"""
    names = [n[: -len(".attn1.processor")] for n in unet.attn_processors if n.endswith(".attn1.processor")]
    group = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}
    return sorted(names, key=lambda n: group.get(n.split(".")[0], 3))  # stable: keeps the order inside a group


def block_levels(unet) -> list[int]:
    """Each transformer block's level, in forward order: ``down_blocks.i`` -> i, the mid block -> the deepest
    level, ``up_blocks.j`` -> (number of up blocks - 1 - j)."""
    n_down, n_up = len(unet.down_blocks), len(unet.up_blocks)
    levels = []
    for name in transformer_blocks_in_call_order(unet):
        part, index = name.split(".")[0], name.split(".")[1]
        levels.append(int(index) if part == "down_blocks" else n_down - 1 if part == "mid_block"
                      else n_up - 1 - int(index))
    return levels


def unet_layers(unet) -> dict[str, Layer]:
    """Every attention layer of the UNet (its processor name) with its ``Layer``."""
    blocks = transformer_blocks_in_call_order(unet)
    order = {name: i for i, name in enumerate(blocks)}
    levels = block_levels(unet)
    layers = {}
    for name in unet.attn_processors:
        block, _, kind = name.rpartition(".")[0].rpartition(".")
        if kind not in ("attn1", "attn2") or block not in order:
            raise ValueError(f"unexpected attention layer {name}: neither self- (attn1) nor cross- (attn2) attention")
        layers[name] = Layer(order[block], levels[order[block]], kind == "attn2", block)
    return layers


def blocks(unet) -> list[Layer]:
    """One ``Layer`` per transformer block (its cross-attention layer), in forward order."""
    return sorted((layer for layer in unet_layers(unet).values() if layer.is_cross), key=lambda layer: layer.index)


def install_processors(unet, make: Callable[[Layer], object]) -> dict:
    """Install ``make(layer)`` on every attention layer and return the previous processors (to restore)."""
    previous = dict(unet.attn_processors)
    unet.set_attn_processor({name: make(layer) for name, layer in unet_layers(unet).items()})
    return previous
