"""Command-line subcommands; each module has ``register(subparsers)`` (see ``metacompress.cli``)."""
