"""dao.hw: device interfaces and the simulated AO bench (installed as :mod:`dao.hw`)."""
