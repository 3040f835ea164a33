"""Study workflows: a strict typed schema, YAML loading, overrides and hashing."""

from medimg.config.load import config_hash, load_workflow, parse_workflow, workflow_to_yaml
from medimg.config.schema import Workflow

__all__ = ["Workflow", "config_hash", "load_workflow", "parse_workflow", "workflow_to_yaml"]
