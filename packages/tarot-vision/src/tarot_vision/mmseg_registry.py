"""Importing this module registers mmseg's modules and tarot-vision's ``GTA5Dataset``.

Every mmseg config that tarot-vision runs carries ``custom_imports = dict(imports=["tarot_vision.mmseg_registry"])``,
so the config mmengine dumps beside a run (``<work_dir>/<timestamp>/vis_data/config.py`` and
``<work_dir>/<name>.py``) reloads in mmseg's own tools (``tools/test.py``, ``Config.fromfile`` plus ``Runner``)
without tarot-vision's command line.
"""

from __future__ import annotations

from .mmseg_backend import import_mmseg

import_mmseg()
