"""Attention control for ALE-Edit: a controller holding per-step policy and state, and two processors.

The sampler runs the UNet on one batch laid out as four chunks of B edits each (``BRANCHES``):
source-unconditional, target-unconditional, source-conditional, target-conditional. The processors read B from
the tensors (batch // 4) and the head count from the attention module; nothing assumes a batch size or a head
count.

- ``SelfAttentionInjection`` (every self-attention layer): while the controller says so for an edit, the target
  branch's queries and keys are the source branch's (its values stay its own). Runs through SDPA.
- ``RegionGuidedCrossAttention`` (every cross-attention layer), RGB-CAM: in the target-conditional chunk only,
  the tokens of object i may attend only inside mask i, and the output is
  sum_i m_i (P V(ORE_i)) + m_back (P V(background)). The other chunks run plain SDPA.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

from .steps import StepSets, exceeds, per_edit

BRANCHES = ("source_uncond", "target_uncond", "source_cond", "target_cond")
N_BRANCHES = len(BRANCHES)
SOURCE_TARGET_PAIRS = ((0, 1), (2, 3))  # (source chunk, target chunk) for self-attention injection
TARGET_COND = 3


def injection_active(schedule, step_index: int, num_steps: int) -> bool:
    """Q,K injection runs at step k while schedule > (k+1)/num_steps (the first ``schedule`` fraction), decided
    on the schedule's decimal value exactly (``steps.exceeds``)."""
    return step_index in exceeds(schedule, num_steps)


def resize_masks_nearest(masks: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Nearest-resize boolean masks (..., H, W) to (..., height, width)."""
    lead = masks.shape[:-2]
    flat = masks.reshape(-1, 1, *masks.shape[-2:]).float()
    out = F.interpolate(flat, size=(height, width), mode="nearest")
    return out.reshape(*lead, height, width) > 0.5


@dataclass
class RegionMasks:
    """Per-resolution masks of one layer size: what each token may attend to, and the blending regions."""

    allowed: torch.Tensor  # (B, N, T) bool: pixel n may attend to token t
    regions: torch.Tensor  # (B, 1 + K, N) float: background first, then each object's exclusive region


@dataclass
class EditController:
    """Per-step policy and state shared by the processors of one sampling run.

    ``object_masks`` (B, K, H, W) bool at latent resolution, zero for padded objects; ``restricted`` (B, K) bool:
    the object has a mask (an object the detector missed is edited without masking); ``token_owner`` (B, T) long:
    the target phrase owning each token, -1 for none; ``region_values`` (B, 1 + K, T, D): the background values
    then ORE_1..ORE_K; ``schedules`` (B,) the self-attention injection fraction of each edit.
    """

    num_steps: int
    schedules: torch.Tensor
    object_masks: torch.Tensor | None = None
    restricted: torch.Tensor | None = None
    token_owner: torch.Tensor | None = None
    region_values: torch.Tensor | None = None
    self_injection: bool = True
    rgb_cam: bool = True
    step_index: int = 0
    _region_cache: dict = field(default_factory=dict, repr=False)
    _value_cache: dict = field(default_factory=dict, repr=False)
    injection_steps: StepSets = field(init=False, repr=False)

    def __post_init__(self):
        # The steps of each edit's Q,K injection, computed once and exactly (never on float32 schedules).
        sets = per_edit(exceeds, self.schedules, self.num_steps)
        self.injection_steps = StepSets(sets if self.self_injection else [frozenset()] * len(sets))
        self.begin_step(self.step_index)

    def begin_step(self, step_index: int) -> None:
        self.step_index = step_index

    def injecting(self) -> torch.Tensor:
        """(B,) bool on the CPU: which edits inject the source's Q,K into the target branch at the current step."""
        return self.injection_steps.tensor(self.step_index)

    def injection_mask(self, device) -> torch.Tensor | bool:
        """What the processors select with: ``True``/``False`` when every edit agrees (no tensor, no host-device
        copy), else a (B, 1, 1, 1) bool tensor on ``device``, copied once per step rather than once per layer."""
        return self.injection_steps.mask(self.step_index, device)

    def region_value_projection(self, attn, dtype) -> torch.Tensor:
        """V(region values) of one cross-attention layer, (B, R, heads, T, dh); constant over a run, so computed
        once per layer instead of at every step."""
        key = (id(attn), dtype)
        if key not in self._value_cache:
            b, n_regions, t, d = self.region_values.shape
            values = attn.to_v(self.region_values.reshape(b * n_regions, t, d).to(dtype))
            self._value_cache[key] = values.view(b, n_regions, t, attn.heads, -1).permute(0, 1, 3, 2, 4)
        return self._value_cache[key]

    @property
    def masking(self) -> bool:
        return self.rgb_cam and self.object_masks is not None

    def region_masks(self, n_pixels: int, device, dtype) -> RegionMasks:
        """Masks at the resolution of a layer with ``n_pixels`` queries, cached per resolution."""
        key = (n_pixels, device, dtype)
        if key not in self._region_cache:
            self._region_cache[key] = self._build_region_masks(n_pixels, device, dtype)
        return self._region_cache[key]

    def _build_region_masks(self, n_pixels: int, device, dtype) -> RegionMasks:
        b, k, h, w = self.object_masks.shape
        scale = math.sqrt(h * w / n_pixels)
        lh, lw = round(h / scale), round(w / scale)
        if lh * lw != n_pixels:
            raise ValueError(f"cannot place {n_pixels} attention queries on a {h}x{w} latent grid")
        masks = resize_masks_nearest(self.object_masks, lh, lw).reshape(b, k, n_pixels)  # (B, K, N)
        masks = masks & self.restricted[:, :, None]
        # Tokens of object i may attend only inside mask i; other tokens (and unrestricted objects) anywhere.
        owner = self.token_owner  # (B, T)
        allowed = torch.ones(b, n_pixels, owner.shape[1], dtype=torch.bool)
        for i in range(k):
            owned = (owner == i) & self.restricted[:, i : i + 1]  # (B, T)
            allowed &= ~owned[:, None, :] | masks[:, i, :, None]
        # Pixels claimed by two or more objects count as background.
        claims = masks.sum(dim=1, keepdim=True)
        exclusive = masks & (claims == 1)
        background = ~exclusive.any(dim=1, keepdim=True)
        regions = torch.cat([background, exclusive], dim=1).to(dtype)
        return RegionMasks(allowed.to(device), regions.to(device))


def _to_heads(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    b, n, _ = x.shape
    return x.view(b, n, attn.heads, -1).transpose(1, 2)  # (b, heads, n, d)


def _from_heads(x: torch.Tensor) -> torch.Tensor:
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


class _ProcessorBase:
    """The prelude and epilogue of diffusers' AttnProcessor2_0, around a core that subclasses define."""

    def __init__(self, controller: EditController):
        self.controller = controller

    def __call__(self, attn: Attention, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        if attention_mask is not None:
            raise NotImplementedError("ALE-Edit processors do not take an attention mask from the UNet")
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

    def attend(self, attn: Attention, hidden_states, encoder_hidden_states):
        raise NotImplementedError

    @staticmethod
    def cross_attention_qkv(attn: Attention, hidden_states, encoder_hidden_states):
        """Q (batch, heads, N, d) of the pixels, K and V (batch, heads, T, d) of the text, of a cross-attention
        layer."""
        if encoder_hidden_states is None:
            raise ValueError("a cross-attention processor was installed on a self-attention layer")
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        return _project(attn, hidden_states, encoder_hidden_states)

    @staticmethod
    def self_attention_qkv(attn: Attention, hidden_states, encoder_hidden_states):
        """Q, K, V in heads, (batch, heads, N, d), of a self-attention layer."""
        if encoder_hidden_states is not None:
            raise ValueError("a self-attention processor was installed on a cross-attention layer")
        return _project(attn, hidden_states, hidden_states)


def _project(attn: Attention, hidden_states, context):
    """Q from the queries' hidden states, K and V from ``context``, in heads, with the layer's Q/K norms."""
    q = _to_heads(attn, attn.to_q(hidden_states))
    k = _to_heads(attn, attn.to_k(context))
    v = _to_heads(attn, attn.to_v(context))
    if attn.norm_q is not None:
        q, k = attn.norm_q(q), attn.norm_k(k)
    return q, k, v


def _chunks(x: torch.Tensor) -> list[torch.Tensor]:
    if x.shape[0] % N_BRANCHES:
        raise ValueError(f"batch of {x.shape[0]} is not {N_BRANCHES} branches of equal size")
    return list(x.chunk(N_BRANCHES, dim=0))


class SelfAttentionInjection(_ProcessorBase):
    """Self-attention where, while injecting, the target branch uses the source branch's queries and keys."""

    def attend(self, attn, hidden_states, encoder_hidden_states):
        q, k, v = self.self_attention_qkv(attn, hidden_states, encoder_hidden_states)
        inject = self.controller.injection_mask(q.device)
        if inject is not False:
            qs, ks = _chunks(q), _chunks(k)
            for src, tgt in SOURCE_TARGET_PAIRS:
                qs[tgt] = qs[src] if inject is True else torch.where(inject, qs[src], qs[tgt])
                ks[tgt] = ks[src] if inject is True else torch.where(inject, ks[src], ks[tgt])
            q, k = torch.cat(qs), torch.cat(ks)
        out = F.scaled_dot_product_attention(q, k, v)
        return _from_heads(out).to(q.dtype)


class RegionGuidedCrossAttention(_ProcessorBase):
    """RGB-CAM: masked cross-attention with region-wise ORE values in the target-conditional branch."""

    def attend(self, attn, hidden_states, encoder_hidden_states):
        q, k, v = self.cross_attention_qkv(attn, hidden_states, encoder_hidden_states)
        ctl = self.controller
        if not ctl.masking:
            return _from_heads(F.scaled_dot_product_attention(q, k, v))
        split = _chunks(q)[0].shape[0] * TARGET_COND  # the chunks before the target-conditional one: views, no copy
        # Source branch and unconditional chunks: plain attention, one SDPA call.
        plain = F.scaled_dot_product_attention(q[:split], k[:split], v[:split])
        target = self.region_guided(attn, q[split:], k[split:])
        return _from_heads(torch.cat([plain, target]))

    def masked_probabilities(self, attn, q, k) -> torch.Tensor:
        """P: (B, heads, N, T) softmax over tokens, object tokens masked outside their objects.

        q: (B, heads, N, d), k: (B, heads, T, d) of the target-conditional chunk. A query never loses every
        token: BOS belongs to no object.
        """
        masks = self.controller.region_masks(q.shape[2], q.device, q.dtype)
        scores = (q @ k.transpose(-1, -2)) * attn.scale
        scores = scores.float().masked_fill(~masks.allowed[:, None], float("-inf"))
        return scores.softmax(dim=-1).to(q.dtype)

    def region_guided(self, attn, q, k):
        ctl = self.controller
        masks = ctl.region_masks(q.shape[2], q.device, q.dtype)
        probs = self.masked_probabilities(attn, q, k)
        values = ctl.region_value_projection(attn, q.dtype)  # (B, R, heads, T, dh)
        per_region = probs[:, None] @ values  # (B, R, heads, N, dh)
        weights = masks.regions[:, :, None, :, None]  # (B, R, 1, N, 1)
        return (per_region * weights).sum(dim=1)


def transformer_blocks_in_call_order(unet) -> list[str]:
    """The UNet's transformer blocks (``...transformer_blocks.N``) in the order a forward pass runs them: down
    blocks, the mid block, up blocks. (``unet.attn_processors`` lists them in registration order, mid last.)
    A block's index in this list is its layer index, fixed at installation: no counting of calls."""
    names = [n[: -len(".attn1.processor")] for n in unet.attn_processors if n.endswith(".attn1.processor")]
    group = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}
    return sorted(names, key=lambda n: group.get(n.split(".")[0], 3))  # stable: keeps the order inside a group


def block_levels(unet) -> list[int]:
    """Each transformer block's level (how many 2x downsamplings precede it), in forward order: ``down_blocks.i``
    -> i, the mid block -> the deepest level, ``up_blocks.j`` -> (number of up blocks - 1 - j)."""
    n_down, n_up = len(unet.down_blocks), len(unet.up_blocks)
    levels = []
    for name in transformer_blocks_in_call_order(unet):
        part, index = name.split(".")[0], name.split(".")[1]
        levels.append(int(index) if part == "down_blocks" else n_down - 1 if part == "mid_block" else n_up - 1 - int(index))
    return levels


def install_processors(unet, make: Callable[[bool, int], object]) -> dict:
    """Install ``make(is_cross, layer_index)`` on every attention layer and return the previous processors.

    The layer index is the transformer block's place in the forward pass, so methods whose behaviour depends on
    the layer (MasaCtrl's start layer, P2P's map store) need no counting of calls.
    """
    previous = dict(unet.attn_processors)
    order = {name: i for i, name in enumerate(transformer_blocks_in_call_order(unet))}
    processors = {}
    for name in previous:
        block, _, kind = name.rpartition(".")[0].rpartition(".")
        if kind not in ("attn1", "attn2") or block not in order:
            raise ValueError(f"unexpected attention layer {name}: neither self- (attn1) nor cross- (attn2) attention")
        processors[name] = make(kind == "attn2", order[block])
    unet.set_attn_processor(processors)
    return previous


def install_ale_processors(unet, controller: EditController) -> dict:
    """ALE-Edit's processors: Q,K injection in every self-attention layer, RGB-CAM in every cross-attention one."""
    self_attention, cross_attention = SelfAttentionInjection(controller), RegionGuidedCrossAttention(controller)
    return install_processors(unet, lambda is_cross, _layer: cross_attention if is_cross else self_attention)
