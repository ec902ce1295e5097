"""One module per measured decision of quantize: each reads a Job and a Build and returns a Build."""
