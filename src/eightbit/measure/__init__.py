"""Measuring models: agreement metrics, latency, progress, and the per-call measurement context.

It sits below the passes and the pipeline and above the backends: it runs models, never rewrites them.
"""
