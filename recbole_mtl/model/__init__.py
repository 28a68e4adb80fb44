"""The plugin's models: one registered class per module (``mtlrec.py`` holds ``MTLRec``, ``mmoe.py``
``MMoE``, ``ple.py`` ``PLE``)."""
