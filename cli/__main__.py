"""`python -m gen.cli`, as `gen` (torchrun -m gen.cli train ...)."""

from gen.cli import main

main()
