"""Built-in ``fnl`` subcommands of fnl-core (``list``, ``schema``)."""
