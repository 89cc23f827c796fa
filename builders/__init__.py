"""Offline half of the gateway: train a fair field of candidates, build ensembles, export to ONNX."""
