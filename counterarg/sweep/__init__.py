"""Ray Tune sweeps over training strategies: each trial is one ``counterarg.training.loop`` run.

The sweep scripts (``sweeps/*.py``) parse, build a :class:`~counterarg.sweep.runner.Sweep` and run
it; the pieces, one job per module:

* :mod:`~counterarg.sweep.spaces`: named strategies, grids of flat trial configs, their searcher;
* :mod:`~counterarg.sweep.trainable`: the Tune trainable that adapts a training run, its resources;
* :mod:`~counterarg.sweep.recovery`: checkpoint sidecars, finished trials and torn experiment
  state after a killed driver;
* :mod:`~counterarg.sweep.prepare`: what a driver prepares before the trials (feature cache, zero-shot baseline);
* :mod:`~counterarg.sweep.runner`: what to run (``Sweep``), starting Ray, running and resuming a sweep;
* :mod:`~counterarg.sweep.tuner`: the Tuner of a sweep: searcher, scheduler, callbacks; what a resume checks first;
* :mod:`~counterarg.sweep.results`: what a finished sweep leaves: its records, summary, race and search sections;
* :mod:`~counterarg.sweep.records`: Tune's results as plain trial records;
* :mod:`~counterarg.sweep.tensorboard`, :mod:`~counterarg.sweep.console`: what a running sweep shows;
  :mod:`~counterarg.sweep.hparams_table`, :mod:`~counterarg.sweep.strategy_runs`: TensorBoard's HParams
  table and its runs per strategy (margin charts);
* :mod:`~counterarg.sweep.pbt`, :mod:`~counterarg.sweep.lineage`: Population Based Training over
  the random rate and the lineage of each trial's weights;
* :mod:`~counterarg.sweep.race`, :mod:`~counterarg.sweep.race_files`: racing strategies over seeds
  (F-Race / irace): the round decision and its searcher; its saved state and files;
* :mod:`~counterarg.sweep.cli`: the flags, names and exit codes the sweep scripts share.

What the results say (the trials' numbers, tests, verdicts, summary files and figures, ``counterarg
compare``) is :mod:`counterarg.analysis`, a layer below this one that imports no Ray.

Importing this package imports nothing; the modules that drive Ray import it plainly. Training
(``counterarg.training.loop``, ``counterarg.evaluation.evaluate``) never imports this package, so it never imports Ray.
"""

#: Lost nodes or worker processes one trial survives by default (``Sweep.max_failures``,
#: ``--max-failures``; :mod:`~counterarg.sweep.failures`); here, so that ``--help`` imports no Ray.
DEFAULT_MAX_FAILURES = 3
