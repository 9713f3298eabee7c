"""Sub-commands of the ``ivr`` console command.

Each module here exposes ``register(subparsers)``, which adds its parser(s) and sets
``func`` (a callable taking the parsed ``argparse.Namespace`` and returning an exit code).
"""
