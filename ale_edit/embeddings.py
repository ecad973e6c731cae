"""Text encodings E(p), memoised per (text encoder id, text), with a Parquet cache on disk.

Every tensor the method needs from the prompts (substituted bases, ORE under any EOS treatment) is arithmetic
on the encodings of a few texts: the empty prompt, the joined prompts and each phrase alone. Caching E(p) per
distinct text is therefore exact and far smaller than caching the assembled plans (phrases recur across edits).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from .atomic import atomic_path
from .text import encode_prompts

SCHEMA = pa.schema([
    ("encoder", pa.string()),
    ("text", pa.string()),
    ("dtype", pa.string()),
    ("shape", pa.list_(pa.int32())),
    ("embedding", pa.binary()),
])

_NUMPY_DTYPES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "float32"}


def encoder_id(model_name: str, dtype: torch.dtype) -> str:
    """What identifies an encoding: the model and the precision it ran in."""
    return f"{model_name}|{str(dtype).replace('torch.', '')}"


class TextEncoder:
    """``encoder(prompts) -> (n, 77, D)``: E(p) from memory when known, else from the text encoder."""

    def __init__(self, tokenizer, text_encoder, encoder: str, *, batch_size: int = 64):
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.encoder = encoder
        self.batch_size = batch_size
        self.cache: dict[str, torch.Tensor] = {}
        self.encoded = 0  # texts run through the text encoder, for tests and logs

    def __call__(self, prompts: Sequence[str]) -> torch.Tensor:
        self.ensure(prompts)
        device = self.text_encoder.device if self.text_encoder is not None else "cpu"
        return torch.stack([self.cache[p] for p in prompts]).to(device)

    def ensure(self, prompts: Iterable[str]) -> None:
        missing = list(dict.fromkeys(p for p in prompts if p not in self.cache))
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start : start + self.batch_size]
            if self.text_encoder is None:
                raise RuntimeError(f"no text encoder to encode {len(missing)} texts missing from the cache")
            out = encode_prompts(self.tokenizer, self.text_encoder, chunk).cpu()
            self.encoded += len(chunk)
            for text, e in zip(chunk, out):
                self.cache[text] = e.clone()

    # -- Parquet --------------------------------------------------------------------------------------------
    def load(self, source: str | os.PathLike | bytes | None) -> int:
        """Add the cached encodings of this encoder from a Parquet file, or from its contents (bytes: what a Ray
        worker receives instead of the path); return how many. A file that is not there (or ``None``) adds none."""
        if source is None:
            return 0
        if isinstance(source, bytes):
            source = pa.BufferReader(source)
        elif not Path(source).is_file():
            return 0
        table = pq.read_table(source, filters=[("encoder", "=", self.encoder)])
        for text, dtype, shape, blob in zip(*(table.column(c).to_pylist() for c in ("text", "dtype", "shape",
                                                                                      "embedding"))):
            self.cache[text] = torch.from_numpy(np.frombuffer(blob, dtype=dtype).reshape(shape).copy())
        return table.num_rows

    def save(self, path: str | os.PathLike) -> None:
        """Write this encoder's cache, keeping other encoders' rows already in ``path``."""
        path = Path(path)
        keep = None
        if path.is_file():
            keep = pq.read_table(path, filters=[("encoder", "!=", self.encoder)])
        texts = sorted(self.cache)
        arrays = [self.cache[t].float().numpy() if self.cache[t].dtype == torch.bfloat16 else self.cache[t].numpy()
                  for t in texts]
        table = pa.table({
            "encoder": [self.encoder] * len(texts),
            "text": texts,
            "dtype": [str(a.dtype) for a in arrays],
            "shape": [list(a.shape) for a in arrays],
            "embedding": [a.tobytes() for a in arrays],
        }, schema=SCHEMA)
        if keep is not None and keep.num_rows:
            table = pa.concat_tables([keep.cast(SCHEMA), table])
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
