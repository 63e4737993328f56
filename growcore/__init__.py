"""growcore: a small PyTorch library for growing neural networks during training.

The library is organised around the three questions of the study (see ``book/intro.md``):

* :mod:`growcore.when`  -- policies that decide *when* to grow,
* :mod:`growcore.where` -- criteria that score *where* to grow,
* :mod:`growcore.how`   -- initialisers that decide *how* the new weights start,

plus :mod:`growcore.ops` (the function-preserving change itself, and carrying the optimiser
state across it), :mod:`growcore.stats` (the statistics that criteria and initialisers read)
and :mod:`growcore.train` (one training loop that composes them).
"""

__version__ = "0.1.0"
