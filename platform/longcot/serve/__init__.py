"""Serving the student behind an OpenAI-compatible endpoint on Ray Serve."""
