"""Large-model item text features: the ``embed`` command and the text adapter/fusion."""
