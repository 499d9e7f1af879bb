"""Framework-free hyperparameter classes: the contract between config and model builders."""

from airlab.specs.base import DataInfo, ModelSpec

__all__ = ["DataInfo", "ModelSpec"]
