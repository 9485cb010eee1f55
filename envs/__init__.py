"""The environment catalog, installed as ``agentrl.envs``.

Importing ``agentrl`` imports this package, which imports every module in it; each module
registers its environments at import with :func:`agentrl.env.register_env` as
``agentrl/<Name>-v0``. Adding an environment to the catalog = adding one module here.
"""

import importlib
import pkgutil

for _mod in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if not _mod.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod}")
