"""Models from the frameworks users train in, as ONNX models: the first step of quantize for them."""
