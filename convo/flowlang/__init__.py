"""The flow language: YAML specs, their compilation into shared state machines, the checks."""
