"""Training Real NVP flows: ``python -m train --help``.

Modules: :mod:`train.config` (recipe and presets), :mod:`train.data` (datasets), :mod:`train.loop` (the
loop), :mod:`train.evaluate` (bits/dim, samples, batch-norm recalibration), :mod:`train.state` (resume
files), :mod:`train.export` (the shipped model files).
"""
