"""Prompt-to-Prompt's token alignment between a source and a target prompt (docs/baselines.md §1.5, §2.2).

Both mappers say, for every one of the 77 token positions of the *target* prompt, which source tokens' cross-
attention maps it takes. Positions count from the BOS token (position 0); EOS and padding follow the prompt.

- ``replacement_mapper`` (P2P's ``AttentionReplace``; prompts with the same number of space-separated words): a
  77 x 77 matrix M with P_target[..., n] = sum_w P_source[..., w] M[w, n]. A word that differs maps its source
  tokens to its target tokens: one to one when the token counts match, else every source token to every target
  token with weight 1 / (target token count). Unchanged words run along the diagonal. After the last replaced
  word P2P writes M[j, j] (not M[i, j]); when the replaced words' token counts differ, every position after the
  last replaced word is therefore mapped from the source position with the *target's* index. This is the
  reference's behaviour and is reproduced (``replacement_mapper`` documents it where it happens).
- ``refinement_mapper`` (P2P's ``AttentionRefine``; any prompts): a global (Needleman-Wunsch) alignment of the two
  token sequences with BOS/EOS, gap 0, match +1, mismatch -1, traceback preferring left, then up, then diagonal.
  mapper[n] is the source position aligned to target position n (-1 if none) and alphas[n] is 1 where aligned,
  else 0; from the target's length on, mapper[n] = n and alphas[n] = 1.

- ``infedit_refinement_mapper`` (InfEdit's ``get_mapper``): the refinement mapper, then for every maximal run of
  unaligned target tokens the one (target p, source q) pair with the most similar text-encoder outputs, q strictly
  between the source positions aligned to the run's neighbours, is aligned too (docs/baselines.md §1.5 step 4).

The alignment functions are pure functions of token ids (and, for InfEdit's step, encodings); ``word_tokens`` is
the one place that tokenizes.
"""

from __future__ import annotations

from typing import Sequence

import torch

MAX_LENGTH = 77
GAP, MATCH, MISMATCH = 0, 1, -1

_LEFT, _UP, _DIAG = 1, 2, 3


def global_alignment(source: Sequence[int], target: Sequence[int], gap: int = GAP, match: int = MATCH,
                     mismatch: int = MISMATCH) -> list[int]:
    """For each target position, the aligned source position or -1: Needleman-Wunsch with P2P's scores and
    tie order (left, i.e. a target token left unaligned, before up, a source token skipped, before diagonal)."""
    nx, ny = len(source), len(target)
    score = [[0] * (ny + 1) for _ in range(nx + 1)]
    trace = [[0] * (ny + 1) for _ in range(nx + 1)]
    for j in range(1, ny + 1):
        score[0][j], trace[0][j] = j * gap, _LEFT
    for i in range(1, nx + 1):
        score[i][0], trace[i][0] = i * gap, _UP
    for i in range(1, nx + 1):
        for j in range(1, ny + 1):
            left = score[i][j - 1] + gap
            up = score[i - 1][j] + gap
            diag = score[i - 1][j - 1] + (match if source[i - 1] == target[j - 1] else mismatch)
            best = max(left, up, diag)
            score[i][j] = best
            trace[i][j] = _LEFT if best == left else _UP if best == up else _DIAG
    aligned = [-1] * ny
    i, j = nx, ny
    while i > 0 or j > 0:
        move = trace[i][j]
        if move == _DIAG:
            i, j = i - 1, j - 1
            aligned[j] = i
        elif move == _LEFT:
            j -= 1  # target token j unaligned
        else:
            i -= 1  # source token i skipped
    return aligned


def refinement_mapper(source_ids: Sequence[int], target_ids: Sequence[int],
                      max_length: int = MAX_LENGTH) -> tuple[torch.Tensor, torch.Tensor]:
    """P2P's refinement mapper of two prompts' token ids *with* BOS and EOS (unpadded).

    Returns ``mapper`` (max_length,) long, the source position each target position reads (-1: none), and
    ``alphas`` (max_length,) float, 1 where the target position takes the source's map, 0 where it keeps its own.
    """
    _check_length(source_ids, max_length)
    _check_length(target_ids, max_length)
    aligned = global_alignment(source_ids, target_ids)
    mapper = torch.arange(max_length, dtype=torch.long)  # positions past the target prompt: identity, alpha 1
    mapper[: len(aligned)] = torch.tensor(aligned, dtype=torch.long)
    alphas = torch.ones(max_length)
    alphas[: len(aligned)] = (mapper[: len(aligned)] >= 0).float()
    return mapper, alphas


ALIGNER_ORDERS = ("reference", "intended")


def infedit_refinement_mapper(source_ids: Sequence[int], target_ids: Sequence[int], source_encoding: torch.Tensor,
                              target_encoding: torch.Tensor, order: str = "reference",
                              max_length: int = MAX_LENGTH) -> tuple[torch.Tensor, torch.Tensor]:
    """P2P's refinement mapper extended by InfEdit's cosine step.

    ``source_encoding``/``target_encoding`` (max_length, D): the text encoder's outputs of the two (padded)
    prompts. For each maximal run [a, b) of unaligned target positions, the candidates are the source positions
    range(mapper[a-1] + 1, mapper[b]); the pair with the highest cosine similarity gets mapper[p] = q, alpha 1
    (the first maximum in target-major order wins; an empty candidate range adds nothing).
    ``order="reference"`` scores cos(source_encoding[p], target_encoding[q]) as InfEdit's code does (its indices
    are swapped), ``"intended"`` scores cos(target_encoding[p], source_encoding[q]).
    """
    if order not in ALIGNER_ORDERS:
        raise ValueError(f"aligner order must be one of {ALIGNER_ORDERS}, got {order!r}")
    mapper, alphas = refinement_mapper(source_ids, target_ids, max_length)
    query, keys = ((source_encoding, target_encoding) if order == "reference"
                   else (target_encoding, source_encoding))
    similarity = torch.nn.functional.cosine_similarity(query.float()[:, None, :], keys.float()[None, :, :], dim=-1)
    n, a = len(target_ids), 0
    while a < n:
        if alphas[a] != 0:
            a += 1
            continue
        b = a
        while b < n and alphas[b] == 0:
            b += 1
        # BOS and EOS always align, so a run has aligned neighbours; the guards only protect odd inputs
        low = int(mapper[a - 1]) + 1 if a > 0 else 0
        high = int(mapper[b]) if b < max_length else len(source_ids)
        best = None
        for p in range(a, b):
            for q in range(low, high):
                if best is None or similarity[p, q] > best[0]:
                    best = (similarity[p, q], p, q)
        if best is not None:
            mapper[best[1]], alphas[best[1]] = best[2], 1.0
        a = b
    return mapper, alphas


def replacement_mapper(source_words: Sequence[Sequence[int]], target_words: Sequence[Sequence[int]],
                       max_length: int = MAX_LENGTH) -> torch.Tensor:
    """P2P's replacement matrix M (max_length, max_length), indexed [source position, target position], from the
    token ids of each space-separated word of the two prompts (no BOS/EOS; word w of the source faces word w of
    the target). Raises ``ValueError`` when the word counts differ (P2P's own check)."""
    if len(source_words) != len(target_words):
        raise ValueError(f"a replacement edit needs prompts with the same number of words, got {len(source_words)} "
                         f"and {len(target_words)}")
    if any(len(w) == 0 for w in (*source_words, *target_words)):
        raise ValueError("a word without tokens cannot be placed")
    _check_length([0, *(t for w in source_words for t in w), 0], max_length)
    _check_length([0, *(t for w in target_words for t in w), 0], max_length)
    source_spans, target_spans = _word_positions(source_words), _word_positions(target_words)
    replaced = [w for w in range(len(source_words)) if list(source_words[w]) != list(target_words[w])]
    mapper = torch.zeros(max_length, max_length)
    i = j = 0  # source and target positions
    r = 0  # the next replaced word
    while i < max_length and j < max_length:
        if r < len(replaced) and source_spans[replaced[r]][0] == i:
            src = list(range(*source_spans[replaced[r]]))
            tgt = list(range(*target_spans[replaced[r]]))
            if len(src) == len(tgt):
                mapper[src, tgt] = 1.0  # token to token
            else:
                mapper[torch.tensor(src)[:, None], torch.tensor(tgt)[None, :]] = 1.0 / len(tgt)
            i, j, r = i + len(src), j + len(tgt), r + 1
        elif r < len(replaced):
            mapper[i, j] = 1.0  # an unchanged token before the last replaced word
            i, j = i + 1, j + 1
        else:
            # After the last replaced word P2P writes M[j, j], not M[i, j]: when the token counts of the replaced
            # words differ, the rest of the target reads the source at its own index. Reproduced on purpose.
            mapper[j, j] = 1.0
            i, j = i + 1, j + 1
    return mapper


def _word_positions(words: Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    spans, start = [], 1  # after BOS
    for w in words:
        spans.append((start, start + len(w)))
        start += len(w)
    return spans


def _check_length(ids: Sequence[int], max_length: int) -> None:
    if len(ids) > max_length:
        raise ValueError(f"{len(ids)} tokens with BOS/EOS exceed the text encoder's {max_length}")


def split_words(prompt: str) -> list[str]:
    """The prompt's space-separated words (P2P splits on " "; runs of whitespace count as one separator here)."""
    return prompt.split()


def word_tokens(tokenizer, prompt: str) -> list[list[int]]:
    """Each space-separated word of ``prompt`` tokenized alone. CLIP's pre-tokenizer never crosses whitespace, so
    their concatenation is the prompt's tokenization; this is checked (it replaces P2P's character counting)."""
    words = [list(tokenizer(w, add_special_tokens=False).input_ids) for w in split_words(prompt)]
    whole = list(tokenizer(prompt, add_special_tokens=False, truncation=False).input_ids)
    if [t for w in words for t in w] != whole:
        raise ValueError(f"the words of {prompt!r} tokenized one by one differ from the prompt's tokens")
    return words


def prompt_ids(tokenizer, prompt: str) -> list[int]:
    """The prompt's token ids with BOS and EOS, unpadded."""
    return list(tokenizer(prompt, add_special_tokens=True, truncation=False).input_ids)


def uses_replacement(source_prompt: str, target_prompt: str) -> bool:
    """P2P's choice: the replacement mapper iff the prompts have the same number of space-separated words."""
    return len(split_words(source_prompt)) == len(split_words(target_prompt))
