"""Calibration from measured runs: read them (``runs``), simulate them under a profile
(``predict``), fit a profile's free parameters (``fit``) and write it (``profile``);
``command`` is ``simplan calibrate --from-runs``."""
