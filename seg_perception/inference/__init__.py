"""Running a trained model on frames: checkpoints, the Segmenter (PyTorch or ONNX Runtime), export, masks."""
