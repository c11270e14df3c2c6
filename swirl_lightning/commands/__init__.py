"""The ``swirl`` commands that are not a pipeline stage of their own: ``swirl tools ...``, ``swirl data ...`` and
``swirl plugin new``. Each takes a dataclass config parsed by :func:`~swirl_lightning.core.config.parse_config`, the
parser of ``swirl generate`` and ``swirl filter``, so a shared group (``--tools.*``, ``--task.*``) and a file
(``--output``) are spelled as every other command spells them."""
