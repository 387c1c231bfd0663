"""Training Real NVP flows: ``python -m train --help``.

Modules: :mod:`train.config` (recipe and presets), :mod:`train.cli` (flags), :mod:`train.data` (datasets, one
loader per module), :mod:`train.loop` (the loop, top to bottom), :mod:`train.job` (what an invocation works
with, the run folder's start), :mod:`train.curve_point` (evaluation and saving), :mod:`train.finish` (the end
of a run), :mod:`train.run_state` (where a run stands), :mod:`train.checkpointing` (checkpoints, resume
checks, warm starts), :mod:`train.state` (resume files), :mod:`train.step_checks` (non-finite steps),
:mod:`train.ranks` (agreement between processes), :mod:`train.progress` (the loss window), :mod:`train.ema`
(the weight average), :mod:`train.evaluate` (bits/dim, samples, batch-norm recalibration),
:mod:`train.schedule`, :mod:`train.score` (a checkpoint's test bits/dim), :mod:`train.export` (the shipped
model files).
"""
