"""Stage embed: the text encodings of every prompt the edits need, cached in Parquet by (encoder, text)."""

from pathlib import Path

import click
import pandas as pd

from _common import load_params, stage_command
from _models import model_name, preflight

from ale_edit.bench.instances import row_prompts, split_failed
from ale_edit.embeddings import TextEncoder, encoder_id
from ale_edit.models import load_text_encoder
from ale_edit.preflight import diffusion_need
from ale_edit.text import JOINER, edit_texts


def texts_for(table: pd.DataFrame) -> list[str]:
    """The empty prompt, the joined source and target prompts, every phrase alone, and the whole prompts of the
    edits that have them (PIE-Bench)."""
    texts = {""}
    table = split_failed(table)[0]
    for row in table.itertuples(index=False):
        sources, targets = list(row.sources), list(row.targets)
        texts.update([JOINER.join(sources), JOINER.join(targets), *sources, *targets])
        prompts = row_prompts(row)
        if prompts is not None:
            texts.update(edit_texts(list(zip(sources, targets)), prompts))
    return sorted(texts)


@stage_command()
@click.option("--params", "params_file", default="params.yaml", show_default=True)
@click.option("--edits", default="data/prompts/edits.parquet", show_default=True)
@click.option("--out", default="data/embeddings/text.parquet", show_default=True)
def main(params_file, edits, out):
    params = load_params(params_file)
    name = model_name(params, "diffusion")
    preflight([diffusion_need(name, text_encoder_only=True)])
    texts = texts_for(pd.read_parquet(edits))
    click.echo(f"embed: {len(texts)} texts with the text encoder of {name}")
    tokenizer, text_encoder, dtype = load_text_encoder(name, params["model"]["device"], params["model"]["dtype"])
    encoder = TextEncoder(tokenizer, text_encoder, encoder_id(name, dtype))
    cached = encoder.load(out)
    encoder.ensure(texts)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    encoder.save(out)
    click.echo(f"embed: {len(texts)} texts, {encoder.encoded} encoded now, {cached} were cached -> {out}")


if __name__ == "__main__":
    main()
