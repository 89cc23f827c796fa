"""A verified repository version loaded into onnxruntime sessions."""
