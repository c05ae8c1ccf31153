"""Read a real Serve config file (``serve build`` output) into deployment settings.

The file is ``applications[].deployments[]`` as Ray writes it. We take the fields the
simulator models (``num_replicas``, ``max_ongoing_requests``, ``max_queued_requests``,
``ray_actor_options.num_cpus``) and name every other key once, so that a user sees
what was ignored rather than a crash; ``autoscaling_config`` and ``num_replicas:
auto`` load as Ray reads them.
"""

from __future__ import annotations

import yaml

from simserve.config import ConfigError

MODELLED = {
    "name",
    "num_replicas",
    "max_ongoing_requests",
    "max_queued_requests",
    "ray_actor_options",
    "autoscaling_config",
    "graceful_shutdown_wait_loop_s",
    "graceful_shutdown_timeout_s",
}


def load_deployment(path: str, name: str | None = None) -> tuple[dict, list[str]]:
    """Return (DeploymentConfig keyword arguments, ignored keys) for one deployment."""
    try:
        with open(path) as f:
            doc = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError("serve_config", path, f"cannot be read ({e.strerror})") from None
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        where = f" at line {line + 1}" if line is not None else ""
        raise ConfigError("serve_config", path, f"is not valid YAML{where}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("applications"), list):
        raise ConfigError("serve_config", path, "has no applications: list")
    found = []
    ignored = [k for k in doc if k != "applications"]
    for app in doc["applications"]:
        if not isinstance(app, dict):
            raise ConfigError("serve_config", path, "an application is not a mapping")
        ignored += [f"applications[{app.get('name', '?')}].{k}" for k in app if k != "deployments"]
        for dep in app.get("deployments") or []:
            if not isinstance(dep, dict) or "name" not in dep:
                raise ConfigError("serve_config", path, "a deployment has no name")
            found.append(dep)
    if not found:
        raise ConfigError("serve_config", path, "lists no deployments")
    if name is None:
        if len(found) > 1:
            names = ", ".join(d["name"] for d in found)
            raise ConfigError("deployment", None, f"the file has several deployments ({names}); pick one")
        dep = found[0]
    else:
        matches = [d for d in found if d["name"] == name]
        if not matches:
            raise ConfigError("deployment", name, f"not in {path} ({', '.join(d['name'] for d in found)})")
        dep = matches[0]
    out = {k: dep[k] for k in MODELLED - {"ray_actor_options"} if k in dep}
    if "autoscaling_config" in dep:
        if not isinstance(dep["autoscaling_config"], dict):
            raise ConfigError("autoscaling_config", dep["autoscaling_config"], "must be a mapping")
        from simserve.autoscaling import AutoscalingConfig

        _, unknown = AutoscalingConfig.from_dict(dep["autoscaling_config"], auto=dep.get("num_replicas") == "auto")
        ignored += [f"{dep['name']}.autoscaling_config.{k}" for k in unknown]
    opts = dep.get("ray_actor_options") or {}
    if not isinstance(opts, dict):
        raise ConfigError("ray_actor_options", opts, "must be a mapping")
    if "num_cpus" in opts:
        out["num_cpus"] = opts["num_cpus"]
    ignored += [f"{dep['name']}.{k}" for k in dep if k not in MODELLED]
    ignored += [f"{dep['name']}.ray_actor_options.{k}" for k in opts if k != "num_cpus"]
    return out, ignored
