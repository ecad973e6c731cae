"""ORE (object-restricted embeddings): the text side of ALE-Edit, and the text plan of an edit.

Notation (the paper's Algorithm 1): E(p) is the CLIP text encoder's 77 x D output for prompt p; phrase i occupies
token positions ``span_i`` of the base prompt (``text.layout_prompt``) and positions 1 .. len_i of its own
standalone encoding.

- substituted base S: E(base) with each phrase's tokens replaced by that phrase's standalone token embeddings;
- ORE_i: S with every other phrase's tokens zeroed, and every slot from the base's EOS onward replaced by phrase
  i's own EOS-and-padding embeddings (EOS aligned to EOS).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import torch

from ...text import PromptLayout, layout_prompt

EosTreatment = Literal["ore", "naive", "zeros", "bos", "empty"]
EOS_TREATMENTS: tuple[str, ...] = ("ore", "naive", "zeros", "bos", "empty")
"""How ORE_i fills the slots from the base prompt's EOS on (the paper's Table 12 ablation):
``ore`` phrase i's own EOS and padding embeddings (the method); ``naive`` left as in the base; ``zeros``;
``bos`` the BOS embedding; ``empty`` the empty prompt's EOS and padding embeddings."""

OreZeroing = Literal["other_phrases", "all_but_phrase"]
ORE_ZEROINGS: tuple[str, ...] = ("other_phrases", "all_but_phrase")
"""Which tokens ORE_i zeroes: ``other_phrases`` the other phrases' tokens only (the paper's Algorithm 1);
``all_but_phrase`` every content token except phrase i's, the joining "and"s too (the authors' code)."""



def substituted_base(
    base: torch.Tensor,
    layout: PromptLayout,
    phrase_embeds: torch.Tensor,
    *,
    index_quirk: bool = False,
) -> torch.Tensor:
    """S: the base embedding (77, D) with phrase i's tokens taken from its standalone encoding ``phrase_embeds[i]``.

    ``index_quirk`` reproduces the authors' code, which reads the standalone encoding at the phrase's positions
    *in the base prompt*: right for the first phrase only; later phrases get post-EOS padding embeddings.
    """
    out = base.clone()
    for i, (start, end) in enumerate(layout.spans):
        if index_quirk:
            out[start:end] = phrase_embeds[i, start:end]
        else:
            out[start:end] = phrase_embeds[i, 1 : 1 + end - start]
    return out


def object_restricted_embeddings(
    substituted: torch.Tensor,
    layout: PromptLayout,
    phrase_embeds: torch.Tensor,
    *,
    eos: EosTreatment = "ore",
    zeroing: OreZeroing = "other_phrases",
    empty_embeds: torch.Tensor | None = None,
) -> torch.Tensor:
    """ORE_i for every phrase i, shape (n_phrases, 77, D).

    ``phrase_embeds[i]`` is E(phrase_i) (77, D); ``empty_embeds`` is E("") and is needed for ``eos="empty"``.
    """
    if eos not in EOS_TREATMENTS:
        raise ValueError(f"unknown EOS treatment {eos!r}; choose one of {EOS_TREATMENTS}")
    if zeroing not in ORE_ZEROINGS:
        raise ValueError(f"unknown ORE zeroing {zeroing!r}; choose one of {ORE_ZEROINGS}")
    n_slots = substituted.shape[0]
    base_eos = layout.eos_index
    tail = n_slots - base_eos
    ores = []
    for i, (start, end) in enumerate(layout.spans):
        ore = substituted.clone()
        if zeroing == "other_phrases":
            for j, (s, e) in enumerate(layout.spans):
                if j != i:
                    ore[s:e] = 0
        else:
            ore[1:base_eos] = 0
        # Phrase i's own tokens (the standalone encoding, as in the substituted base done right).
        ore[start:end] = phrase_embeds[i, 1 : 1 + end - start]
        phrase_eos = 1 + (end - start)
        if eos == "ore":
            ore[base_eos:] = phrase_embeds[i, phrase_eos : phrase_eos + tail]
        elif eos == "zeros":
            ore[base_eos:] = 0
        elif eos == "bos":
            ore[base_eos:] = substituted[0]
        elif eos == "empty":
            if empty_embeds is None:
                raise ValueError("eos='empty' needs the empty prompt's embedding")
            ore[base_eos:] = empty_embeds[1 : 1 + tail]
        ores.append(ore)
    return torch.stack(ores)


@dataclass
class TextPlan:
    """Everything the sampler and the attention processors need from the prompts of one edit."""

    source: PromptLayout
    target: PromptLayout
    uncond: torch.Tensor  # (77, D) E("")
    source_cond: torch.Tensor  # (77, D) the source branch's conditioning: substituted source base
    target_cond: torch.Tensor  # (77, D) the target branch's conditioning (keys, and values outside RGB-CAM)
    background_values: torch.Tensor  # (77, D) RGB-CAM's values outside every object: substituted target base
    ore: torch.Tensor  # (n_objects, 77, D) RGB-CAM's values inside object i

    @property
    def n_objects(self) -> int:
        return len(self.target.phrases)

    def token_owner(self) -> torch.Tensor:
        """(77,) long: the index of the target phrase owning each token position, -1 for none."""
        owner = torch.full((self.uncond.shape[0],), -1, dtype=torch.long)
        for i, (start, end) in enumerate(self.target.spans):
            owner[start:end] = i
        return owner


@torch.no_grad()
def build_text_plan(
    tokenizer,
    encode: Callable[[Sequence[str]], torch.Tensor],
    pairs: Sequence[tuple[str, str]],
    *,
    use_ore: bool = True,
    eos: EosTreatment = "ore",
    zeroing: OreZeroing = "other_phrases",
    index_quirk: bool = False,
) -> TextPlan:
    """Lay out and encode the source and target prompts of an edit and derive the ORE.

    ``encode(prompts)`` returns E(p) for each prompt, (n, 77, D): ``encode_prompts`` bound to a text encoder, or
    a cached ``embeddings.TextEncoder``.

    With ``use_ore=False`` (the ablation without ORE) the source and target branches get the plain base
    embeddings, and RGB-CAM uses the plain target base as the values of every region.
    """
    sources = [s for s, _ in pairs]
    targets = [t for _, t in pairs]
    src_layout = layout_prompt(tokenizer, sources)
    tgt_layout = layout_prompt(tokenizer, targets)
    prompts = ["", src_layout.text, tgt_layout.text, *sources, *targets]
    embeds = encode(prompts)
    n = len(pairs)
    uncond, src_base, tgt_base = embeds[0], embeds[1], embeds[2]
    src_phrases, tgt_phrases = embeds[3 : 3 + n], embeds[3 + n :]
    if not use_ore:
        ore = tgt_base.unsqueeze(0).expand(n, -1, -1).clone()
        return TextPlan(src_layout, tgt_layout, uncond, src_base, tgt_base, tgt_base.clone(), ore)
    src_sub = substituted_base(src_base, src_layout, src_phrases, index_quirk=index_quirk)
    tgt_sub = substituted_base(tgt_base, tgt_layout, tgt_phrases, index_quirk=index_quirk)
    ore = object_restricted_embeddings(tgt_sub, tgt_layout, tgt_phrases, eos=eos, zeroing=zeroing, empty_embeds=uncond)
    # The target branch's keys come from the ordinary target prompt; values are RGB-CAM's business.
    return TextPlan(src_layout, tgt_layout, uncond, src_sub, tgt_base, tgt_sub, ore)
