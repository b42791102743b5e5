"""Experiments behind the docs, callable from Python; ``benchmarks/*.py`` are their command-line drivers.

* :mod:`~goodsam.experiments.evidence` / :mod:`~goodsam.experiments.evidence_report`: the evidence run
  (``docs/results.md``, ``docs/results.json``, ``docs/results/*.png``);
* :mod:`~goodsam.experiments.gpu_check`: what needs a CUDA machine to be seen working;
* :mod:`~goodsam.experiments.amg`, :mod:`~goodsam.experiments.speed`, :mod:`~goodsam.experiments.train_step`:
  the mask-generator, inference-speed and training-step benchmarks.

This is the top layer: it may import every other sub-package, none of them imports it.
"""
