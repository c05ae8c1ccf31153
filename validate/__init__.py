"""validate: measure real Ray Serve 2.60.0 on this machine and compare it with simserve.

* ``validate.scenario``  -- a scenario *is* a ``simserve.SimConfig``; helpers build the
  few configurations the smoke test and the grid use.
* ``validate.harness``   -- runs a ``SimConfig`` against real Ray Serve (``ray.init``
  with the cluster's logical CPUs, a Serve app whose handler performs the same work
  model, closed-loop or Poisson clients through a ``DeploymentHandle`` or HTTP) and
  returns a summary with the same JSON keys as ``simulate(cfg).summary``.
* ``validate.host_speed`` -- the fixed pure-Python probe of the host's speed, the
  sampler that takes it every 0.25 s during a run, and the run's speed read from it.
* ``validate.calibrate`` -- ``python -m validate.calibrate``: microbenchmarks that
  measure each ``simserve.Overheads`` field and the host speed with real Ray, written
  to ``validate/calibration/ray-2.60.0-<host>.json``.
* ``python -m validate --smoke`` -- a few small configurations, real vs simulated,
  non-zero exit if throughput differs by more than 25 %.
* ``python -m validate`` -- a larger grid, written to ``validate/REPORT.md``.

Nothing in this package tunes a calibration number to make a validation row match:
calibration and validation are separate runs.
"""
