"""Inference runtimes behind one interface (PyTorch, ONNX Runtime, TensorRT), chosen by name
through ``registry``."""
