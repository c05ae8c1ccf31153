"""simserve: a discrete-event simulator of Ray Serve 2.60 scaling behaviour."""

from simserve.config import (
    ClusterConfig,
    ConfigError,
    DeploymentConfig,
    Overheads,
    RouterConfig,
    Segment,
    SimConfig,
    WorkloadConfig,
    WorkModel,
)
from simserve.distributions import Distribution
from simserve.simulation import SimResult, simulate

__all__ = [
    "ClusterConfig",
    "ConfigError",
    "DeploymentConfig",
    "Distribution",
    "Overheads",
    "RouterConfig",
    "Segment",
    "SimConfig",
    "SimResult",
    "WorkloadConfig",
    "WorkModel",
    "simulate",
]
