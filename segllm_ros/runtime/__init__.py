"""Inference runtimes behind one interface: PyTorch, ONNX Runtime, TensorRT."""
