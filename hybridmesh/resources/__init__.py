"""Typed resource model (pydantic): the only place that knows YAML."""
