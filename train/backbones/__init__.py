"""CNN backbones for DeepDream, written in the project, with parameter names of the public weight files."""
