"""Checkpoint -> bundle: ONNX graphs, TensorRT engines and golden parity data (see the export issue)."""
