"""recbole_mtl: multi-task recommendation models for RecBole, on TorchRec embeddings.

Importing the package applies the compatibility layer (:mod:`recbole_mtl.compat`) and the
hardening (:mod:`recbole_mtl.hardening`), and registers the plugin's models into RecBole's zoo,
so ``recbole.utils.get_model("MTLRec")`` works too.
"""

from recbole_mtl import compat as _compat
from recbole_mtl import hardening as _hardening

_compat.apply()
_hardening.apply()

from recbole_mtl.config import Config  # noqa: E402
from recbole_mtl.utils import get_model, get_trainer  # noqa: E402

__version__ = "0.1.0"
REGISTERED_MODELS = _compat.register_plugin_models()

__all__ = ["Config", "get_model", "get_trainer", "REGISTERED_MODELS", "__version__"]
