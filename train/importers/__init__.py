"""Reading StyleGAN models trained elsewhere (NVlabs, rosinality) as data, never as code."""
