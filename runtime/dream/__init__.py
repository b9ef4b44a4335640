"""DeepDream, torch-free: the one dreaming loop, layer objectives, a bundle's gradient graph, feedback zooms,
and `gen dream`'s work from image file to written file (`run.dream_to_file`)."""
