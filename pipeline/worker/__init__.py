"""The stream processors: a faust app whose agents are thin loops around `pipeline.core`."""
