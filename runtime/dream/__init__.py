"""DeepDream, torch-free: the one dreaming loop, layer objectives, a bundle's gradient graph, feedback zooms."""
