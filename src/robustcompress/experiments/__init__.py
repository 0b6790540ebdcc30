"""Experiments: config schema, stages, runner, artifact cache and results store."""

from robustcompress.stages import STAGES, StageConfig, StageContext, register_stage

__all__ = ["STAGES", "StageConfig", "StageContext", "register_stage"]
