"""Memory planner: a configuration's peak memory predicted from its shapes on the meta device."""

from sota.plan.estimate import Plan, plan

__all__ = ["Plan", "plan"]
