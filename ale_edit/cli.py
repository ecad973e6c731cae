"""The ``ale-edit`` command line."""

from __future__ import annotations

import click

from .commands.clean_work import clean_work
from .commands.convert_sam import convert_sam
from .commands.edit import edit
from .commands.report import report
from .commands.score import score
from .commands.studio import studio


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ale-edit")
def main():
    """ALE-Edit: attribute-leakage-free multi-object image editing, and the ALE-Bench benchmark."""


main.add_command(edit)
main.add_command(score)
main.add_command(report)
main.add_command(clean_work)
main.add_command(studio)
main.add_command(convert_sam)

if __name__ == "__main__":
    main()
