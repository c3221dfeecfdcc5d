"""`python -m dni …`: the `dni` command."""

from dni.cli import main

main()
