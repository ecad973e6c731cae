"""``compat``: one setting that makes ale-edit run as the authors' code (ml-postech/ALE) runs.

ale-edit's defaults (profile ``none``) follow the paper and fix what the authors' code gets wrong or leaves to
chance; profile ``authors`` switches every such point back, so the published numbers can be reproduced. Each
point stays a setting of its own, named here by its params.yaml key, and a setting given explicitly wins over
the profile: ``resolve`` takes the given value when there is one (not ``None``), else the profile's, else the
default.

What ``authors`` sets, and why each differs from ale-edit's default:

- ``ale.ore_index_quirk: true``: the substituted base reads phrase i's standalone encoding at its positions in
  the *base* prompt (right for the first phrase only).
- ``ale.ore_zeroing: all_but_phrase``: ORE_i zeroes every content token but phrase i's, the joining "and"s too.
- ``edit.vae_latent: sample``: z0 is a sample of the VAE's distribution, not its mode.
- ``ale.bb_mask: multiscale``: background blending's foreground is the OR of the object mask nearest-resized to
  the latent grid h and to h/2, h/4, h/8 (each brought back to h by nearest).
- ``ale.bb_start: 1``: background blending after steps 1, 2, ... (not after step 0).
- ``edit.last_alpha: current``: the last step re-noises with the alpha of its own timestep (prev_t = t), not 1.
- ``ale.final_blend: false``: the returned pred_x0 is not blended (ale-edit's default too; named for the record).
- ``score.mask_weights: soft``: masks are continuous weights (grey level / 255, united by per-pixel max), not
  binarised at 0.5.
- ``score.te_variant: joined``: the reported TE scores the background against the joined target prompt, not the
  mean over targets of the paper's eq. 6.
- ``score.resize_edited: true``: an edit of another size than its source is resized (bicubic) before scoring, as
  their evaluator does, instead of being an error row.
- ``edit.dilation: 0.04``: masks are dilated by a disk of radius int(0.04 x size) px; the paper says 0.01
  ("seven pixels" at 768).
- ``model.segmenter: facebook/sam2.1-hiera-large``: SAM 2.1 Hiera-L segments the detector's boxes (their
  Grounded-SAM-2 setup); the paper names Grounded-SAM, whose segmenter is SAM ViT-H.
"""

from __future__ import annotations

from typing import Any, Mapping

COMPAT_PROFILES: tuple[str, ...] = ("none", "authors")

PROFILES: dict[str, dict[str, Any]] = {
    "none": {},
    "authors": {
        "ale.ore_index_quirk": True,
        "ale.ore_zeroing": "all_but_phrase",
        "edit.vae_latent": "sample",
        "ale.bb_mask": "multiscale",
        "ale.bb_start": 1,
        "edit.last_alpha": "current",
        "ale.final_blend": False,
        "score.mask_weights": "soft",
        "score.te_variant": "joined",
        "score.resize_edited": True,
        "edit.dilation": 0.04,
        "model.segmenter": "facebook/sam2.1-hiera-large",
    },
}


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise ValueError(f"unknown compat profile {profile!r}; choose one of {', '.join(COMPAT_PROFILES)}")
    return profile


def resolve(profile: str, key: str, given: Any, default: Any) -> Any:
    """The value of setting ``key`` (its params.yaml path, e.g. ``"ale.bb_mask"``): ``given`` when not ``None``,
    else the profile's value, else ``default``."""
    if given is not None:
        return given
    return PROFILES[check_profile(profile)].get(key, default)


def provenance(profile: str, given: Mapping[str, Any], prefix: str | tuple[str, ...] = "") -> dict:
    """For an edit's or a score's record: the profile, what it set, and which of its settings were overridden.

    ``given`` maps setting keys (params.yaml paths) to the values given explicitly, or to the values in use after
    resolution (``None``: not given); a value equal to the profile's counts as the profile's. Only the keys under
    ``prefix`` (one or a tuple) are reported (``"score."`` for a score run, ``""`` for everything).
    """
    chosen = {k: v for k, v in PROFILES[check_profile(profile)].items() if k.startswith(prefix)}
    overridden = {k: given[k] for k in chosen if given.get(k) is not None and given[k] != chosen[k]}
    return {
        "profile": profile,
        "from_profile": {k: v for k, v in chosen.items() if k not in overridden},
        "overridden": overridden,
    }
