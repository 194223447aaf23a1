"""Serving erased models over HTTP with Ray Serve (jobs/serve.py; docs/serving.md).

Importing this package starts nothing: `runner.serve_forever` or `runner.start` deploy.
"""
