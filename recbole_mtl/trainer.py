"""Trainers for the plugin's models (``<Model>Trainer``), extending RecBole's ``Trainer``."""
