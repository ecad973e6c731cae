"""``ale-edit clean-work``: remove the edit stage's work files of edits whose results are assembled."""

from __future__ import annotations

from pathlib import Path

import click

from ..bench.runner import remove_assembled


@click.command("clean-work")
@click.option("--work", type=click.Path(path_type=Path), default=Path(".ale-edit-work/edit"), show_default=True,
              help="The edit stage's work folder (one sub-folder per edit type).")
@click.option("--results", type=click.Path(path_type=Path), default=Path("results"), show_default=True,
              help="The results folder (<type>/edits.parquet names the assembled edits).")
def clean_work(work, results):
    """Remove work files of edits already in the results (left behind by sharded runs whose results DVC restored
    from its cache). Work files of edits not in any results table are kept: a resumed run still needs them."""
    removed, kept = remove_assembled(work, results)
    click.echo(f"clean-work: removed {removed} files of assembled edits from {work}; kept {kept}")
