"""``python -m starter.cli``: the ``chorus`` command line."""

from starter.cli import main

main()
