"""The method platform: every federated method as a typed config, a server strategy and client algorithm(s).

No nvflare here: ``flare_vlp.fl`` hosts strategies and algorithms in FLARE, :mod:`flare_vlp.methods.runner` hosts
them in one process. Importing this package registers the built-in methods (light: strategies and algorithms are
class paths resolved on first use).
"""

from flare_vlp.methods import fedavg, feddra, lora_ft  # noqa: F401  (registration)
from flare_vlp.methods.registry import (
    DEFAULT_ROLE,
    MethodSpec,
    get_method,
    method_config,
    method_names,
    register_method,
)

__all__ = ["DEFAULT_ROLE", "MethodSpec", "get_method", "method_config", "method_names", "register_method"]

# registered after the weights methods, so method listings (flags, jobs, tables) keep their order
from flare_vlp.methods import creamfl  # noqa: E402, F401
