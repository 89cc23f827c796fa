"""Online half of the gateway: serve every candidate from an ONNX model repository and judge them live."""
