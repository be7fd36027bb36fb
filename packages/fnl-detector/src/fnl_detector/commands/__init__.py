"""``fnl`` subcommands shipped by fnl-detector (modules stay light: torch loads in ``run``)."""
