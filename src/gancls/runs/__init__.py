"""Running the pipeline: experiments, scheduled runs, clones and processes.

- ``experiment``: ``gancls experiment`` (a settings file applied as a DVC experiment; ``make run-cub``).
- ``serve``: ``gancls serve`` (the Prefect server and the scheduled deployment); ``scheduling``: the
  scheduled run's rules (status, regression, summary, lock); ``worktree``: its temporary git worktree.
- ``process``: git, DVC and child processes; ``project``: clones of this repository with other params.

May import every part; only ``gancls.cli`` and ``flows/`` import it.
"""
