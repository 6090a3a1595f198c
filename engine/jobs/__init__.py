"""Pilots as Ray jobs (issue 20): ``submit`` hands an already created run to Ray, which runs
``engine.pilot.runner.run_pilot`` wherever the pilot's resources are free, so the pilot
outlives the process that started it.

- ``cluster``: which Ray to use (``--ray-address`` / ``ROILAB_RAY_ADDRESS``, else a local
  head started on first use) and the one clear error when it is not reachable;
- ``ray_executor``: what a pilot asks Ray for, and the submission itself;
- ``node``: where a pilot ran (host, GPUs, Ray node), stored with the run.

Every pilot is submitted (``roilab pilot``, ``resume``, ``demo``, ``playbook --run`` and the
dashboard; without ``--detach`` the command follows the run from the store). Ray is imported
only here and only when a pilot is submitted: every other command, and a pilot run with
``--in-process``, runs without it.
"""
