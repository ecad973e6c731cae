"""The ``ale-edit`` command line: one module per command."""
