"""The torch-free side of gen: image I/O, seeds, the dreaming loop and the `gen` command."""
