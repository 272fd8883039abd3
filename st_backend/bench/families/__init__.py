"""One file per architecture the factory builds besides its five core ones; each calls ``register_family``."""
