"""StyleGAN from a bundle, torch-free: the generator (seeds -> pictures), sampling, walks and style mixing."""
