"""`python -m robustcompress ...`: the same CLI as the `robustcompress` command."""

from robustcompress.cli import main

main()
