"""PyTorch side of gen: the StyleGAN and DeepDream references and their training. Needs gen[train]."""
