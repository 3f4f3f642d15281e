"""What a finished sweep or a set of training runs says, read without Ray: trial records, their numbers,
the seed-aware tests and the verdicts they give, the summary's files and figures, ``counterarg compare``.

* :mod:`~counterarg.analysis.methods`: the methods strategies train (reference, recipe) and each trial's one name;
* :mod:`~counterarg.analysis.trials`: a trial as plain data (:class:`~counterarg.analysis.trials.TrialRecord`),
  its best epoch, groups over seeds and their statistics;
* :mod:`~counterarg.analysis.significance`, :mod:`~counterarg.analysis.verdicts`: the seed-aware paired
  test and the verdicts it gives;
* :mod:`~counterarg.analysis.summary`, :mod:`~counterarg.analysis.plots`,
  :mod:`~counterarg.analysis.provenance`, :mod:`~counterarg.analysis.search_summary`: a sweep's summary
  files, its figures, where and how it ran, the search section;
* :mod:`~counterarg.analysis.run_compare`: ``counterarg compare``, the same test over two groups of run folders.

A layer between training and the sweeps (tests/test_imports.py): nothing here imports Ray, Tune or
pyarrow, so the summaries and ``counterarg compare`` run where Ray is not installed; the sweep package
(:mod:`counterarg.sweep`) turns Tune's results into these records and calls them.
"""
