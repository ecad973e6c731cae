"""The real CLIP BPE tokenizer, built offline from the vocabulary that open-clip-torch ships.

Stable Diffusion 1.x, LCM-Dreamshaper and OpenAI CLIP all use the same 49,408-entry BPE vocabulary. open-clip-torch
ships it as ``bpe_simple_vocab_16e6.txt.gz``; from it we write the ``vocab.json`` / ``merges.txt`` pair that
transformers' ``CLIPTokenizer`` reads, so tiny test models tokenize exactly like the real ones.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

MODEL_MAX_LENGTH = 77
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP's reversible byte -> printable-character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def _open_clip_bpe_path() -> Path:
    # open_clip's package import pulls torchvision; locate its data file without importing it.
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("open-clip-torch is not installed: it ships the CLIP BPE vocabulary the tokenizer needs")
    path = Path(spec.submodule_search_locations[0]) / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise RuntimeError(f"open-clip-torch's BPE vocabulary is missing at {path}")
    return path


def write_clip_tokenizer_files(directory: str | os.PathLike) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` (CLIP's vocabulary) into ``directory`` and return it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lines = gzip.open(_open_clip_bpe_path()).read().decode("utf-8").split("\n")
    # The same slice open_clip's SimpleTokenizer takes: 49152 - 256 - 2 merges.
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    byte_chars = list(_bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges] + [BOS_TOKEN, EOS_TOKEN]
    assert len(vocab) == 49408, len(vocab)
    (directory / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}), encoding="utf-8")
    (directory / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8"
    )
    return directory


@functools.lru_cache(maxsize=1)
def _cached_tokenizer_dir() -> Path:
    directory = Path(tempfile.mkdtemp(prefix="ale_edit_clip_tokenizer_"))
    return write_clip_tokenizer_files(directory)


def clip_tokenizer() -> "CLIPTokenizer":
    """The CLIP tokenizer of SD 1.x (pad token ``<|endoftext|>``, 77 tokens), built offline."""
    from transformers import CLIPTokenizer

    # transformers 5's CLIPTokenizerFast(vocab_file=..., merges_file=...) silently builds an empty vocabulary;
    # loading the slow tokenizer from a directory does not.
    tokenizer = CLIPTokenizer.from_pretrained(
        str(_cached_tokenizer_dir()),
        model_max_length=MODEL_MAX_LENGTH,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
    )
    if len(tokenizer) != 49408:
        raise RuntimeError(f"CLIP tokenizer built with {len(tokenizer)} entries, expected 49408")
    return tokenizer
