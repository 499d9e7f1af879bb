"""Configs: safe YAML with positions, `extends:`, dotted overrides, a pydantic schema."""

from airlab.config.load import apply_overrides, load_config, to_dict, to_yaml, validate

__all__ = ["apply_overrides", "load_config", "to_dict", "to_yaml", "validate"]
